//! Test-only policy: misbehaves when a segment asks it to, so the host's sandbox can be tested.
//! `please-loop` spins forever, `please-oom` allocates 1 GiB, `please-trap` panics,
//! `please-find` reports a `test.marker` finding, `please-log` writes to the host log.
//! Configuration `{"refuse": true}` makes `configure` fail. Not shipped as a built-in.

#[cfg(target_arch = "wasm32")]
mod component {
    use conduit_policy_sdk::{Description, Finding, Level, Policy, RequestInfo, Segment, Severity, Verdict, log};

    struct Misbehave;

    impl Policy for Misbehave {
        fn describe() -> Description {
            Description::new("misbehave", "0.0.1", &["test.*"])
        }

        fn configure(config: String) -> Result<(), String> {
            if config.contains("\"refuse\":true") || config.contains("\"refuse\": true") {
                return Err("refusing on purpose".into());
            }
            Ok(())
        }

        fn evaluate(_info: RequestInfo, segments: Vec<Segment>) -> Verdict {
            let mut verdict = Verdict::allow();
            for (i, s) in segments.iter().enumerate() {
                if s.text.contains("please-loop") {
                    let mut n: u64 = 0;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                if s.text.contains("please-oom") {
                    let v: Vec<u8> = vec![1; 1 << 30];
                    std::hint::black_box(&v);
                }
                if s.text.contains("please-trap") {
                    panic!("trapping on purpose");
                }
                if s.text.contains("please-log") {
                    log(Level::Warn, "misbehave was asked to log");
                }
                if s.text.contains("please-deny") {
                    // A refusal of the whole request that rests on one segment's text.
                    verdict = verdict.deny(400, "misbehave was asked to refuse this request");
                }
                if let Some(at) = s.text.find("please-find") {
                    verdict.push(Finding::at("test.marker", "please-find", i, at..at + 11, Severity::Low));
                }
            }
            verdict
        }
    }

    conduit_policy_sdk::export_policy!(Misbehave);
}
