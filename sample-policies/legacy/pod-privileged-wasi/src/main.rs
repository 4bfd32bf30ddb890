//! pod-privileged as a plain WASI program, Kubewarden's `wasi` execution
//! mode: `validate` or `validate-settings` as the first argument, the JSON
//! input on stdin, the JSON answer on stdout.

use std::io::{Read, Write};

use serde_json::{json, Value};

fn main() {
    let command = std::env::args().nth(1).unwrap_or_default();
    let mut input = String::new();
    let answer = match std::io::stdin().read_to_string(&mut input) {
        Err(e) => {
            json!({"accepted": false, "message": format!("cannot read stdin: {e}"), "code": 500})
        }
        Ok(_) => match (command.as_str(), serde_json::from_str::<Value>(&input)) {
            ("validate", Ok(payload)) => validate(&payload),
            ("validate-settings", Ok(settings)) => match settings.as_object() {
                Some(s) if s.is_empty() => json!({"valid": true}),
                _ => json!({"valid": false, "message": "this policy takes no settings"}),
            },
            (_, Err(e)) => {
                json!({"accepted": false, "message": format!("input is not JSON: {e}"), "code": 400})
            }
            (other, _) => {
                json!({"accepted": false, "message": format!("unknown command {other:?}"), "code": 500})
            }
        },
    };
    let _ = std::io::stdout().write_all(answer.to_string().as_bytes());
}

fn validate(payload: &Value) -> Value {
    let request = &payload["request"];
    let operation = request["operation"].as_str().unwrap_or_default();
    if request["kind"]["kind"] != "Pod" || !(operation == "CREATE" || operation == "UPDATE") {
        return json!({"accepted": true});
    }
    let mut privileged = Vec::new();
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for container in request["object"]["spec"][list]
            .as_array()
            .into_iter()
            .flatten()
        {
            if container["securityContext"]["privileged"] == true {
                privileged.push(container["name"].as_str().unwrap_or("?").to_owned());
            }
        }
    }
    if privileged.is_empty() {
        json!({"accepted": true})
    } else {
        json!({"accepted": false, "message": format!("privileged containers are not allowed: {}", privileged.join(", "))})
    }
}
