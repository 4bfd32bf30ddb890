;; A waPC guest that replays a script from its settings into every host
;; import, with the pointers and lengths the script says: the host must
;; answer each call or trap it, never fail itself.
;;
;; validate_settings receives the settings, a JSON string of hex digits; the
;; decoded bytes are the script: an opcode byte, then its operands (pointers
;; as 2 bytes, lengths as 1 byte, little-endian).
(module
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))
  (import "wapc" "__host_call"
    (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wapc" "__host_response" (func $host_response (param i32)))
  (import "wapc" "__host_response_len" (func $host_response_len (result i32)))
  (import "wapc" "__host_error" (func $host_error (param i32)))
  (import "wapc" "__host_error_len" (func $host_error_len (result i32)))
  (import "wapc" "__console_log" (func $console_log (param i32 i32)))
  (memory (export "memory") 1)

  ;; script cursor and end, in the decoded area
  (global $pc (mut i32) (i32.const 0))
  (global $end (mut i32) (i32.const 0))

  (func $nibble (param $c i32) (result i32)
    (if (result i32) (i32.le_u (local.get $c) (i32.const 57))
      (then (i32.and (i32.sub (local.get $c) (i32.const 48)) (i32.const 15)))
      (else (i32.and (i32.sub (local.get $c) (i32.const 87)) (i32.const 15)))))

  ;; the next script byte (0 past the end)
  (func $byte (result i32)
    (local $b i32)
    (if (i32.ge_u (global.get $pc) (global.get $end)) (then (return (i32.const 0))))
    (local.set $b (i32.load8_u (global.get $pc)))
    (global.set $pc (i32.add (global.get $pc) (i32.const 1)))
    (local.get $b))

  (func $ptr (result i32)
    (i32.or (call $byte) (i32.shl (call $byte) (i32.const 8))))

  (func $len (result i32) (call $byte))

  (func (export "__guest_call") (param $op_len i32) (param $payload_len i32) (result i32)
    (local $i i32) (local $n i32) (local $dst i32) (local $op i32)
    ;; operation at 0, payload (the settings JSON) at 1024
    (call $guest_request (i32.const 0) (i32.const 1024))
    ;; decode the hex between the quotes into 40960..
    (local.set $n (i32.shr_u (i32.sub (local.get $payload_len) (i32.const 2)) (i32.const 1)))
    (if (i32.gt_u (local.get $n) (i32.const 20000)) (then (local.set $n (i32.const 20000))))
    (local.set $i (i32.const 0))
    (block $done
      (loop $decode
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (i32.store8
          (i32.add (i32.const 40960) (local.get $i))
          (i32.or
            (i32.shl (call $nibble (i32.load8_u (i32.add (i32.const 1025) (i32.shl (local.get $i) (i32.const 1))))) (i32.const 4))
            (call $nibble (i32.load8_u (i32.add (i32.const 1026) (i32.shl (local.get $i) (i32.const 1)))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $decode)))
    (global.set $pc (i32.const 40960))
    (global.set $end (i32.add (i32.const 40960) (local.get $n)))
    (block $stop
      (loop $run
        (br_if $stop (i32.ge_u (global.get $pc) (global.get $end)))
        (local.set $op (i32.rem_u (call $byte) (i32.const 11)))
        (block $next
          (block $b10 (block $b9 (block $b8 (block $b7 (block $b6 (block $b5
          (block $b4 (block $b3 (block $b2 (block $b1 (block $b0
            (br_table $b0 $b1 $b2 $b3 $b4 $b5 $b6 $b7 $b8 $b9 $b10 (local.get $op)))
            (call $guest_request (call $ptr) (call $ptr)) (br $next))
            (call $guest_response (call $ptr) (call $len)) (br $next))
            (call $guest_error (call $ptr) (call $len)) (br $next))
            (drop (call $host_call (call $ptr) (call $len) (call $ptr) (call $len)
                                   (call $ptr) (call $len) (call $ptr) (call $len))) (br $next))
            (call $host_response (call $ptr)) (br $next))
            (drop (call $host_response_len)) (br $next))
            (call $host_error (call $ptr)) (br $next))
            (drop (call $host_error_len)) (br $next))
            (call $console_log (call $ptr) (call $len)) (br $next))
            (drop (memory.grow (i32.and (call $byte) (i32.const 3)))) (br $next))
          ;; 10: write the next len bytes of the script at ptr (names for __host_call)
          (local.set $dst (call $ptr))
          (local.set $n (call $len))
          (local.set $i (i32.const 0))
          (block $copied
            (loop $copy
              (br_if $copied (i32.ge_u (local.get $i) (local.get $n)))
              (i32.store8 (i32.and (i32.add (local.get $dst) (local.get $i)) (i32.const 32767)) (call $byte))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $copy))))
        (br $run)))
    (i32.const 1))
)
