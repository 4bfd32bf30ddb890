//! Policy group expressions: `&&`, `||`, `!`, parentheses and zero-argument
//! member calls (`a() || (b() && !c())`). Anything else is refused when the
//! configuration loads, with the position of the problem.

use std::fmt;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Call(String),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// A syntax error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid expression at character {position}: {reason}")]
pub struct ExprError {
    pub position: usize,
    pub reason: String,
}

impl Expr {
    /// Parses an expression.
    pub fn parse(text: &str) -> Result<Self, ExprError> {
        let mut parser = Parser {
            text,
            pos: 0,
            depth: 0,
            calls: 0,
        };
        let expr = parser.or()?;
        parser.skip_ws();
        if parser.pos < text.len() {
            return Err(parser.error("unexpected input after the expression"));
        }
        Ok(expr)
    }

    /// The member names the expression calls.
    pub fn members(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Self::Call(name) => out.push(name),
            Self::Not(e) => e.collect(out),
            Self::And(a, b) | Self::Or(a, b) => {
                a.collect(out);
                b.collect(out);
            }
        }
    }

    /// Evaluates with short-circuit: `call` runs only for the members whose
    /// result decides the outcome. The first error stops the evaluation.
    pub fn evaluate<E>(&self, call: &mut impl FnMut(&str) -> Result<bool, E>) -> Result<bool, E> {
        Ok(match self {
            Self::Call(name) => call(name)?,
            Self::Not(e) => !e.evaluate(call)?,
            Self::And(a, b) => a.evaluate(call)? && b.evaluate(call)?,
            Self::Or(a, b) => a.evaluate(call)? || b.evaluate(call)?,
        })
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Call(name) => write!(f, "{name}()"),
            Self::Not(e) => write!(f, "!{e}"),
            Self::And(a, b) => write!(f, "({a} && {b})"),
            Self::Or(a, b) => write!(f, "({a} || {b})"),
        }
    }
}

/// How deeply `!` and parentheses may nest: parsing, evaluating and
/// dropping recurse, and a group expression comes from a cluster resource,
/// so its depth must not be able to exhaust a thread's stack.
const MAX_DEPTH: usize = 64;
/// How many calls an expression may make: `&&` and `||` chains nest their
/// tree as deeply as they are long.
const MAX_CALLS: usize = 256;

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
    calls: usize,
}

impl Parser<'_> {
    fn error(&self, reason: &str) -> ExprError {
        ExprError {
            position: self.pos,
            reason: reason.to_owned(),
        }
    }

    fn rest(&self) -> &str {
        self.text.get(self.pos..).unwrap_or("")
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        let negated = self.eat("!");
        if !negated && !self.eat("(") {
            return self.call();
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(&format!("nested more than {MAX_DEPTH} levels deep")));
        }
        let inner = if negated {
            Expr::Not(Box::new(self.unary()?))
        } else {
            let inner = self.or()?;
            if !self.eat(")") {
                return Err(self.error("expected `)`"));
            }
            inner
        };
        self.depth -= 1;
        Ok(inner)
    }

    fn call(&mut self) -> Result<Expr, ExprError> {
        self.calls += 1;
        if self.calls > MAX_CALLS {
            return Err(self.error(&format!("more than {MAX_CALLS} calls")));
        }
        self.skip_ws();
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.error("expected a member call such as `name()`"));
        }
        let name = rest.get(..len).unwrap_or_default().to_owned();
        self.pos += len;
        if !self.eat("(") {
            return Err(self.error(&format!("`{name}` must be called with `()`")));
        }
        if !self.eat(")") {
            return Err(self.error(&format!("`{name}()` takes no arguments")));
        }
        Ok(Expr::Call(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_grouping() {
        assert_eq!(
            Expr::parse("a() || b() && !c()").unwrap().to_string(),
            "(a() || (b() && !c()))"
        );
        assert_eq!(
            Expr::parse(" (a() || b()) && c() ").unwrap().to_string(),
            "((a() || b()) && c())"
        );
        assert_eq!(Expr::parse("!!a()").unwrap().members(), ["a"]);
    }

    #[test]
    fn short_circuit_calls_only_what_decides() {
        let expr = Expr::parse("a() || (b() && c())").unwrap();
        let mut called = Vec::new();
        let result = expr
            .evaluate::<()>(&mut |name| {
                called.push(name.to_owned());
                Ok(name == "a")
            })
            .unwrap();
        assert!(result);
        assert_eq!(called, ["a"]);
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "a",
            "a(1)",
            "a() &",
            "a() and b()",
            "a() == b()",
            "(a()",
            "",
            "a() b()",
            "a.b()",
        ] {
            assert!(Expr::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn depth_and_length_are_bounded() {
        let nested = format!("{}a(){}", "(".repeat(64), ")".repeat(64));
        assert!(Expr::parse(&nested).is_ok());
        let deeper = format!("{}a(){}", "(".repeat(65), ")".repeat(65));
        let err = Expr::parse(&deeper).unwrap_err();
        assert!(err.reason.contains("nested more than 64"), "{err}");
        let negations = format!("{}a()", "!".repeat(100_000));
        assert!(Expr::parse(&negations).is_err());
        let chain = vec!["a()"; 257].join(" && ");
        let err = Expr::parse(&chain).unwrap_err();
        assert!(err.reason.contains("more than 256 calls"), "{err}");
        assert!(Expr::parse(&vec!["a()"; 256].join(" || ")).is_ok());
    }
}
