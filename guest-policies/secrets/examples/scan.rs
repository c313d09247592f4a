//! Native profiling aid: scans a file (or the policies benchmark's mixed prompt text) repeatedly
//! and prints MB/s for the whole scan and for the keyword prefilter alone.
//! `cargo run --release -p conduit-policy-secrets --example scan [-- FILE]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

/// The same mix as host/benches/policies.rs: prose, code, logs, JSON, a secret now and then.
fn mixed_text(target: usize) -> String {
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

fn main() {
    let text = match std::env::args().nth(1) {
        Some(path) => std::fs::read_to_string(path).unwrap(),
        None => mixed_text(1 << 20),
    };
    let t = Instant::now();
    let scanner = conduit_policy_secrets::Scanner::builtin().unwrap();
    println!("configure: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let rounds = 20;
    let mb = text.len() as f64 / 1e6;
    let t = Instant::now();
    let mut hits = 0;
    for _ in 0..rounds {
        hits += scanner.prefilter_hits(&text);
    }
    let secs = t.elapsed().as_secs_f64() / f64::from(rounds);
    println!(
        "prefilter: {:.2} ms per scan, {:.0} MB/s, {} keyword hits",
        secs * 1e3,
        mb / secs,
        hits / rounds as usize
    );
    let no_generic = conduit_policy_secrets::Scanner::new(&conduit_policy_secrets::Config {
        generic: false,
        ..Default::default()
    })
    .unwrap();
    let t = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(no_generic.scan(&text));
    }
    let secs = t.elapsed().as_secs_f64() / f64::from(rounds);
    println!(
        "scan without the generic detector: {:.2} ms per scan, {:.0} MB/s",
        secs * 1e3,
        mb / secs
    );
    let t = Instant::now();
    let mut n = 0;
    for _ in 0..rounds {
        n += scanner.scan(&text).len();
    }
    let secs = t.elapsed().as_secs_f64() / f64::from(rounds);
    println!(
        "scan: {} bytes, {:.2} ms per scan, {:.0} MB/s, {} findings",
        text.len(),
        secs * 1e3,
        mb / secs,
        n / rounds as usize
    );
}
