//! The audit log as read back from disk (`conduit_audit::chain`): start-up recovery, `conduit
//! audit verify` and export read day files a crash, a full disk or an attacker may have damaged.
//! Two modes, by the first byte:
//! - any bytes as a day file: never panics; a file verify passes, export reads record for record;
//! - a valid three-record chain (with its HEAD) with bytes overwritten where the input says:
//!   verify passes only if nothing changed — every alteration is detected.
#![no_main]

use std::path::{Path, PathBuf};

use conduit_audit::chain::{self, Filter, Head};
use conduit_audit::{AuditRecord, ZERO_HASH, line_hash};
use libfuzzer_sys::fuzz_target;

const DAY: i64 = 20_000;

fn dir() -> PathBuf {
    let base = std::env::var_os("CONDUIT_FUZZ_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!("conduit-fuzz-audit-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A valid chain as the writer lays it out, and its head.
fn template() -> (Vec<u8>, Head) {
    let mut file = Vec::new();
    let mut prev = ZERO_HASH.to_string();
    for seq in 1..=3u64 {
        let r = AuditRecord {
            seq,
            prev: prev.clone(),
            request_id: format!("req_{seq:04}"),
            start_ms: 1_728_000_000_000 + seq as i64,
            end_ms: 1_728_000_000_100 + seq as i64,
            status: 200,
            outcome: "complete".into(),
            path: "/v1/messages".into(),
            model: Some("claude-sonnet-4-5".into()),
            input_tokens: 10 * seq,
            output_tokens: 5,
            cost_micros: Some(123),
            ..AuditRecord::default()
        };
        let line = serde_json::to_vec(&r).unwrap();
        prev = line_hash(&line);
        file.extend_from_slice(&line);
        file.push(b'\n');
    }
    (file, Head { seq: 3, hash: prev })
}

fn reset(dir: &Path) {
    for (_, p) in chain::day_files(dir).unwrap_or_default() {
        let _ = std::fs::remove_file(p);
    }
    for name in ["HEAD", "head.json", "ANCHOR"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static STATE: (PathBuf, (Vec<u8>, Head)) = (dir(), template());
    }
    let (control, rest) = conduit_fuzz::split(data);
    STATE.with(|(dir, (valid, head))| {
        reset(dir);
        if control & 1 == 0 {
            std::fs::write(chain::day_path(dir, DAY), rest).unwrap();
            let _ = chain::recover(dir);
            let verified = chain::verify(dir);
            let mut seen = 0u64;
            let scanned = chain::scan(dir, &Filter::default(), |_, _| {
                seen += 1;
                true
            });
            // A chain verify calls whole must read back whole: record for record.
            if let Ok(v) = &verified
                && v.ok
            {
                assert!(scanned.is_ok(), "verify passed a file export cannot read: {scanned:?}");
                assert_eq!(seen, v.records, "verify and export disagree on the records");
            }
        } else {
            let mut file = valid.clone();
            for edit in rest.chunks_exact(3) {
                let at = u16::from_le_bytes([edit[0], edit[1]]) as usize % file.len();
                file[at] = edit[2];
            }
            std::fs::write(chain::day_path(dir, DAY), &file).unwrap();
            chain::write_head(dir, head).unwrap();
            let v = chain::verify(dir).unwrap();
            if v.ok {
                assert!(file == *valid, "an altered audit log verified as intact");
            }
        }
    });
});
