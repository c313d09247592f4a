//! Native profiling aid: scans a file (or the policies benchmark's mixed prompt text) repeatedly
//! and prints MB/s for the whole scan and for the keyword prefilter alone.
//! `cargo run --release -p conduit-policy-secrets --example scan [-- FILE]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

#[path = "support/mixed_text.rs"]
mod mixed_text;
use mixed_text::mixed_text;

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
