;; A waPC policy that accepts every request (and any settings): the HTTP
;; fuzz target's evaluation path, without a build step.
(module
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{\"accepted\":true,\"valid\":true}")
  (func (export "__guest_call") (param $op_len i32) (param $payload_len i32) (result i32)
    (call $guest_response (i32.const 0) (i32.const 30))
    (i32.const 1)))
