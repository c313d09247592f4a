//! Native profiling aid: scans a file (or generated mixed text) repeatedly and prints MB/s.
//! `cargo run --release -p conduit-policy-secrets --example scan [-- FILE]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

fn main() {
    let text = match std::env::args().nth(1) {
        Some(path) => std::fs::read_to_string(path).unwrap(),
        None => {
            let prose = "The parser keeps a cursor into the buffer; when a token spans two reads it copies the tail and retries. Refresh the access token before it expires, and never log the token itself. ";
            let code = "fn handle(req: Request) -> Result<Response> {\n    let token = req.header(\"authorization\")?;\n    let user = db.lookup(&token_hash(token))?;\n    Ok(Response::json(&user))\n}\n";
            let mut s = String::new();
            while s.len() < 1 << 20 {
                s.push_str(prose);
                s.push_str(code);
            }
            s
        }
    };
    let scanner = conduit_policy_secrets::Scanner::builtin().unwrap();
    let t = Instant::now();
    let rounds = 10;
    let mut n = 0;
    for _ in 0..rounds {
        n += scanner.scan(&text).len();
    }
    let secs = t.elapsed().as_secs_f64() / rounds as f64;
    println!(
        "{} bytes: {:.2} ms per scan, {:.0} MB/s, {} findings",
        text.len(),
        secs * 1e3,
        text.len() as f64 / secs / 1e6,
        n / rounds
    );
}
