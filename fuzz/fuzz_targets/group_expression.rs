//! Policy group expressions: parsing and evaluation never panic nor
//! overflow the stack, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_host::server::expression::Expr;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(expr) = Expr::parse(text) {
        let mut calls = 0usize;
        let _ = expr.evaluate(&mut |name: &str| {
            calls += 1;
            Ok::<_, ()>(name.len() % 2 == 0)
        });
    }
});
