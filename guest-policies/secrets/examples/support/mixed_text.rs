//! The text the secrets measurements share: `examples/scan.rs` beside this folder, the guests in wasmtime
//! (`crates/policy/examples/guest_scan.rs`) and `host/benches/policies.rs` include this file, so
//! their MB/s figures are of the same bytes. Token-dense on purpose: "token", "access", "key" and
//! "authorization" are what the keyword pass and the generic detector have to look at.

/// ~`target` bytes of what prompts look like: prose, code, logs, JSON, a secret now and then.
pub fn mixed_text(target: usize) -> String {
    let prose = "The parser keeps a cursor into the buffer; when a token spans two reads it copies the tail and retries. Refresh the access token before it expires, and never log the token itself. ";
    let code = "fn handle(req: Request) -> Result<Response> {\n    let token = req.header(\"authorization\")?;\n    let user = db.lookup(&token_hash(token))?;\n    Ok(Response::json(&user))\n}\n";
    let log = "2026-11-27T07:00:01Z INFO request_id=req_8c5c93b4 status=200 duration_ms=12.4 key_id=key_2f9c1a\n";
    let json = "{\"id\":\"3f2b8c1e-9a4d-4e6f-b2c1-7d8e9f0a1b2c\",\"sha\":\"9fceb02d0ae598e95dc970b74767f19372d61af8\",\"max_tokens\":64000}\n";
    let secret = "export GITHUB_TOKEN=ghp_R8xk2LmQ9vTz4WcY7nB3pJ6hF1sD5gA0eK2u\n";
    let mut s = String::with_capacity(target + 1024);
    let mut i = 0;
    while s.len() < target {
        s.push_str(match i % 9 {
            0..=3 => prose,
            4 | 5 => code,
            6 => log,
            7 => json,
            _ if i % 90 == 8 => secret,
            _ => prose,
        });
        i += 1;
    }
    s
}
