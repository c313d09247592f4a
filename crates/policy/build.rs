//! Builds the built-in policies (`guest-policies/*`) for `wasm32-wasip2` with a nested cargo,
//! signs each with a key made for this build, and writes `builtin_policies.rs` into OUT_DIR:
//! the components, their signatures and the public key, which the gateway trusts for exactly
//! these bytes. The built-ins then go through the same signature check as every other policy.
//!
//! Needs `rustup target add wasm32-wasip2`. The guests build into `target/policies` (their own
//! target dir, so the outer build's lock is not contended) with the `policy` profile and
//! `+simd128`.

use std::path::{Path, PathBuf};
use std::process::Command;

use p256::ecdsa::{DerSignature, SigningKey, signature::Signer};
use p256::pkcs8::{EncodePublicKey, LineEnding};

/// Built alongside, not embedded: the sandbox tests' misbehaving policy and the documented
/// example. Their paths are exported for the tests.
const EXTRA: &[(&str, &str)] = &[
    ("MISBEHAVE_WASM", "conduit_policy_misbehave"),
    ("EXAMPLE_NO_TICKETS_WASM", "conduit_example_no_tickets"),
];

const POLICIES: &[(&str, &str)] = &[
    ("secrets", "conduit_policy_secrets"),
    ("entities", "conduit_policy_entities"),
    ("models", "conduit_policy_models"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest.ancestors().nth(2).map(Path::to_path_buf).unwrap_or_default();
    for dir in ["guest-policies", "sdk", "wit", "examples/rust-policy"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=CONDUIT_POLICY_TARGET_DIR");
    let target_dir = std::env::var("CONDUIT_POLICY_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target").join("policies"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--profile",
            "policy",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for krate in POLICIES.iter().map(|(_, k)| *k).chain(EXTRA.iter().map(|(_, k)| *k)) {
        cmd.args(["-p", &krate.replace('_', "-")]);
    }
    if std::env::var("CARGO_NET_OFFLINE").is_ok_and(|v| v == "true") {
        cmd.arg("--offline");
    }
    // The outer build's flags and wrappers (clippy, coverage) are for the host, not the guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+simd128");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the built-in policies: {e}"));
    if !status.success() {
        panic!(
            "building the built-in policies for wasm32-wasip2 failed (see above). \
             If the target is missing: `rustup target add wasm32-wasip2`."
        );
    }

    // A signing key for this build only; its public half is compiled in.
    let mut seed = [0u8; 32];
    let key = loop {
        getrandom::fill(&mut seed).unwrap_or_else(|e| panic!("no randomness for the build signing key: {e}"));
        if let Ok(k) = SigningKey::from_slice(&seed) {
            break k;
        }
    };
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap_or_else(|e| panic!("encoding the build public key: {e}"));
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    let mut code = String::from("/// The built-in policies: (name, component, base64 DER signature).\n");
    code.push_str("pub static BUILTIN: &[(&str, &[u8], &str)] = &[\n");
    for (name, krate) in POLICIES {
        let wasm_path = target_dir
            .join("wasm32-wasip2")
            .join("policy")
            .join(format!("{krate}.wasm"));
        let wasm = std::fs::read(&wasm_path).unwrap_or_else(|e| panic!("{}: {e}", wasm_path.display()));
        let copy = out.join(format!("{name}.wasm"));
        std::fs::write(&copy, &wasm).unwrap_or_else(|e| panic!("{}: {e}", copy.display()));
        let sig: DerSignature = key.sign(&wasm);
        let sig_b64 = base64_encode(sig.as_bytes());
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?}), {sig_b64:?}),\n",
            copy.display().to_string()
        ));
    }
    code.push_str("];\n\n");
    for (constant, krate) in EXTRA {
        let path = target_dir
            .join("wasm32-wasip2")
            .join("policy")
            .join(format!("{krate}.wasm"));
        code.push_str(&format!("/// Path of a test / example component built with the built-ins.\n#[allow(dead_code)]\npub static {constant}: &str = {:?};\n", path.display().to_string()));
    }
    code.push_str("\n/// The public key the built-ins were signed with (made for this build).\n");
    code.push_str(&format!("pub static BUILTIN_PUBLIC_KEY: &str = {public_pem:?};\n"));
    std::fs::write(out.join("builtin_policies.rs"), code)
        .unwrap_or_else(|e| panic!("writing builtin_policies.rs: {e}"));
}

fn base64_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}
