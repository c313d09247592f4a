//! The Wasm side: one wasmtime [`Engine`] for the process, components compiled once (cached in
//! memory and on disk by content hash), and per policy a pool of configured instances.
//!
//! Sandbox. A policy links against the `conduit:policy` world and nothing else it can use: the
//! WASI imports a `wasm32-wasip2` Rust guest carries are defined as traps, except
//! `wasi:random/insecure-seed` (hash-map seeding), answered with fresh randomness. No files, no
//! network, no environment, no clock. Each call has a deadline (base + per MiB of text) in CPU
//! time of the calling thread, checked every millisecond by the epoch ticker, with a wall-clock
//! backstop of 10× (at least 0.5 s) — a starved thread is not cut for time it was not given, a
//! spinning guest is; each instance has a memory cap; a trap or an overrun drops the
//! instance, and the next call gets a fresh one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};

wasmtime::component::bindgen!({
    world: "policy",
    path: "../../wit",
});

pub use self::conduit::policy::types::{Finding, Severity};

/// Limits applied to every policy call.
#[derive(Debug, Clone, Copy)]
pub struct Sandbox {
    /// Base deadline per call.
    pub timeout: Duration,
    /// Extra deadline per MiB of segment text.
    pub per_mib: Duration,
    /// Memory cap per instance, bytes.
    pub memory_bytes: usize,
}

/// The epoch tick: deadlines are counted in these.
const TICK: Duration = Duration::from_millis(1);

/// Calls into guest code now running. The epoch ticker runs only while there is one: an idle
/// gateway does not wake a thousand times a second (2 % of a core here, and the caches that
/// the next request then finds cold).
static IN_GUEST: InGuest = InGuest {
    calls: AtomicUsize::new(0),
    lock: Mutex::new(()),
    began: Condvar::new(),
};

struct InGuest {
    calls: AtomicUsize,
    lock: Mutex<()>,
    began: Condvar,
}

impl InGuest {
    /// Blocks the ticker while no call runs (waking each second, so a dropped engine ends it).
    /// `true`: a call is running; `false`: a second passed without one.
    fn wait_for_a_call(&self) -> bool {
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        while self.calls.load(Ordering::Acquire) == 0 {
            let (g, timeout) = self
                .began
                .wait_timeout(guard, Duration::from_secs(1))
                .unwrap_or_else(|p| p.into_inner());
            guard = g;
            if timeout.timed_out() {
                return false;
            }
        }
        true
    }
}

/// Held for the length of a call into guest code: the ticker runs meanwhile.
#[must_use = "the epoch ticks only while this is held"]
struct Ticking;

impl Ticking {
    fn start() -> Ticking {
        if IN_GUEST.calls.fetch_add(1, Ordering::AcqRel) == 0 {
            // Under the lock: the ticker either sees the count or is already waiting.
            let _guard = IN_GUEST.lock.lock().unwrap_or_else(|p| p.into_inner());
            IN_GUEST.began.notify_all();
        }
        Ticking
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        IN_GUEST.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The process-wide engine, with its epoch ticker thread.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = match Engine::new(&config) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "wasmtime engine with epoch interruption unavailable; using defaults");
                Engine::default()
            }
        };
        let ticker = engine.weak();
        let spawned = std::thread::Builder::new().name("conduit-epoch".into()).spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                let _ = IN_GUEST.wait_for_a_call();
                std::thread::sleep(TICK);
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the policy epoch ticker; policy deadlines will not fire");
        }
        engine
    })
}

/// The key that authenticates compiled artifacts in the on-disk cache. Loading a compiled
/// artifact runs native code, so a file is used only if its MAC under this key checks out: the
/// gateway derives the key from the master key (an attacker who can write the cache directory
/// cannot forge an artifact without it); without a master key (the CLI's `policy test`), a random
/// key per process makes the disk cache write-only.
#[derive(Clone)]
pub struct CacheKey(zeroize::Zeroizing<[u8; 32]>);

impl CacheKey {
    /// Derived from the master key.
    pub fn from_master(master: &conduit_core::seal::MasterKey) -> CacheKey {
        CacheKey(master.derive("conduit policy-cache v1"))
    }

    /// A fresh random key (artifacts written under it are useless to any other process).
    pub fn ephemeral() -> CacheKey {
        let mut k = zeroize::Zeroizing::new([0u8; 32]);
        let _ = getrandom::fill(k.as_mut());
        CacheKey(k)
    }

    fn mac(&self, name: &str, bytes: &[u8]) -> [u8; 32] {
        use hmac::digest::KeyInit;
        use hmac::{Hmac, Mac};
        let mut block = zeroize::Zeroizing::new([0u8; 64]);
        block[..32].copy_from_slice(self.0.as_ref());
        let mut mac = <Hmac<Sha256> as KeyInit>::new(block.as_ref().into());
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }
}

impl Default for CacheKey {
    fn default() -> Self {
        CacheKey::ephemeral()
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheKey(<redacted>)")
    }
}

/// Compiles a component, or loads it from the in-memory or the (authenticated) on-disk cache.
pub fn compile(bytes: &[u8], cache: Option<(&Path, &CacheKey)>) -> Result<Component, String> {
    static MEMORY: OnceLock<Mutex<HashMap<[u8; 32], Component>>> = OnceLock::new();
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    let memory = MEMORY.get_or_init(Default::default);
    if let Some(c) = memory.lock().unwrap_or_else(|p| p.into_inner()).get(&digest) {
        return Ok(c.clone());
    }
    let engine = engine();
    let cached = cache.map(|(dir, key)| (artifact_path(dir, &digest, engine), key));
    let from_disk = cached.as_ref().and_then(|(p, key)| load_artifact(engine, p, key));
    let component = match from_disk {
        Some(c) => c,
        None => {
            let c = Component::new(engine, bytes).map_err(|e| format!("not a valid policy component: {e:#}"))?;
            if let Some((path, key)) = &cached {
                store_artifact(&c, path, key);
            }
            c
        }
    };
    memory
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(digest, component.clone());
    Ok(component)
}

fn artifact_path(dir: &Path, digest: &[u8; 32], engine: &Engine) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!(
        "{}-{:016x}.cwasm",
        conduit_core::hex::encode(digest),
        h.finish()
    ))
}

/// Loads a precompiled artifact: a 32-byte MAC, then the bytes `Component::serialize` wrote.
/// The MAC (under the cache key, over the file name — which binds the component's content hash
/// and the engine's compatibility hash — and the bytes) must verify *before* wasmtime sees a byte;
/// a file that does not verify or load is ignored and rebuilt.
#[allow(unsafe_code)]
fn load_artifact(engine: &Engine, path: &Path, key: &CacheKey) -> Option<Component> {
    let file = std::fs::read(path).ok()?;
    let name = path.file_name()?.to_string_lossy();
    if file.len() < 32 {
        return None;
    }
    let (mac, bytes) = file.split_at(32);
    let expected = key.mac(&name, bytes);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(mac, &expected[..])) {
        tracing::warn!(path = %path.display(), "ignoring a compiled policy cache entry that does not verify (written under another key, or altered)");
        return None;
    }
    // SAFETY: wasmtime requires that the bytes were produced by `Component::serialize` of a
    // compatible engine. They were: their MAC, under a key only this gateway holds (derived from
    // the master key), verified above, and the file name binds the engine's compatibility hash;
    // wasmtime checks the header as well.
    match unsafe { Component::deserialize(engine, bytes) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring a compiled policy cache entry");
            None
        }
    }
}

fn store_artifact(component: &Component, path: &Path, key: &CacheKey) {
    let Ok(bytes) = component.serialize() else { return };
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    if let Some(dir) = path.parent() {
        let _ = conduit_core::fsperm::create_private_dir(dir);
    }
    let mut file = Vec::with_capacity(bytes.len() + 32);
    file.extend_from_slice(&key.mac(&name, &bytes));
    file.extend_from_slice(&bytes);
    let tmp = path.with_extension("tmp");
    if conduit_core::fsperm::write_private(&tmp, &file)
        .and_then(|()| std::fs::rename(&tmp, path))
        .is_err()
    {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Per-store state: the memory limiter, the linear memory in use, and the policy's name for its
/// log lines.
pub struct HostState {
    limits: StoreLimits,
    memory_bytes: usize,
    name: Arc<str>,
    /// The call under way's deadline, read when an epoch deadline passes.
    call: Option<CallClock>,
}

/// A call's deadline. It counts the **CPU time of the calling thread**, so a call whose thread
/// was not scheduled (a loaded host, a noisy neighbour) is not cut for time it never had; a
/// wall-clock backstop of [`WALL_FACTOR`]× the deadline (at least [`WALL_MIN`]) still bounds
/// how long a request can wait on a policy.
#[derive(Debug, Clone, Copy)]
struct CallClock {
    cpu_start: Duration,
    wall_start: Instant,
    budget: Duration,
}

/// The wall-clock backstop, as a multiple of a call's CPU deadline.
const WALL_FACTOR: u32 = 10;
/// The smallest wall-clock backstop.
const WALL_MIN: Duration = Duration::from_millis(500);

impl CallClock {
    fn start(budget: Duration) -> CallClock {
        CallClock {
            cpu_start: thread_cpu_time(),
            wall_start: Instant::now(),
            budget,
        }
    }

    /// At an epoch deadline: stop, or the ticks until the budget could next be spent.
    fn update(&self) -> wasmtime::UpdateDeadline {
        let used = thread_cpu_time().saturating_sub(self.cpu_start);
        let backstop = (self.budget * WALL_FACTOR).max(WALL_MIN);
        if used >= self.budget || self.wall_start.elapsed() >= backstop {
            wasmtime::UpdateDeadline::Interrupt
        } else {
            wasmtime::UpdateDeadline::Continue(ticks(self.budget.saturating_sub(used)))
        }
    }
}

/// CPU time the calling thread has used. Where the platform has no per-thread clock, wall time
/// since an arbitrary start (the deadline is then a wall-clock one).
fn thread_cpu_time() -> Duration {
    #[cfg(target_os = "linux")]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
    }
    #[cfg(not(target_os = "linux"))]
    {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed()
    }
}

impl wasmtime::ResourceLimiter for HostState {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let ok = self.limits.memory_growing(current, desired, maximum)?;
        if ok {
            self.memory_bytes += desired.saturating_sub(current);
        }
        Ok(ok)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl self::conduit::policy::types::Host for HostState {}

impl self::conduit::policy::host::Host for HostState {
    fn log(&mut self, level: self::conduit::policy::host::Level, message: String) {
        use self::conduit::policy::host::Level;
        // Capped: a policy must not log request text, and cannot flood the log.
        let message: String = message.chars().take(256).collect();
        let policy = &*self.name;
        match level {
            Level::Error => tracing::error!(target: "conduit::policy", policy, "{message}"),
            Level::Warn => tracing::warn!(target: "conduit::policy", policy, "{message}"),
            Level::Info => tracing::info!(target: "conduit::policy", policy, "{message}"),
            Level::Debug => tracing::debug!(target: "conduit::policy", policy, "{message}"),
        }
    }
}

/// A compiled, linked policy that can make configured instances.
pub struct Prepared {
    pre: PolicyPre<HostState>,
    name: Arc<str>,
    config_json: String,
    sandbox: Sandbox,
    pool: Mutex<Vec<Instance>>,
    max_idle: usize,
}

struct Instance {
    store: Store<HostState>,
    bindings: Policy,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The deadline passed.
    Timeout(Duration),
    /// The instance hit its memory cap.
    OutOfMemory(usize),
    /// Any other trap or error.
    Trap(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout(d) => write!(f, "did not finish within its {} ms deadline", d.as_millis()),
            Failure::OutOfMemory(cap) => write!(f, "exceeded its memory cap of {} MiB", cap >> 20),
            Failure::Trap(t) => write!(f, "trapped: {t}"),
        }
    }
}

fn linker() -> Result<Linker<HostState>, String> {
    let mut linker = Linker::new(engine());
    Policy::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s).map_err(|e| e.to_string())?;
    Ok(linker)
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

fn random_bytes(len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len.min(1 << 20) as usize];
    let _ = getrandom::fill(&mut v);
    v
}

fn define_benign_wasi(linker: &mut Linker<HostState>, name: &str) -> wasmtime::Result<()> {
    let interface = name.split('@').next().unwrap_or(name);
    match interface {
        "wasi:random/insecure-seed" => {
            linker
                .instance(name)?
                .func_wrap("insecure-seed", |_s, (): ()| Ok(((random_u64(), random_u64()),)))?;
        }
        "wasi:random/random" => {
            let mut i = linker.instance(name)?;
            i.func_wrap("get-random-bytes", |_s, (len,): (u64,)| Ok((random_bytes(len),)))?;
            i.func_wrap("get-random-u64", |_s, (): ()| Ok((random_u64(),)))?;
        }
        "wasi:random/insecure" => {
            let mut i = linker.instance(name)?;
            i.func_wrap("get-insecure-random-bytes", |_s, (len,): (u64,)| {
                Ok((random_bytes(len),))
            })?;
            i.func_wrap("get-insecure-random-u64", |_s, (): ()| Ok((random_u64(),)))?;
        }
        "wasi:cli/environment" => {
            let mut i = linker.instance(name)?;
            i.func_wrap("get-environment", |_s, (): ()| Ok((Vec::<(String, String)>::new(),)))?;
            i.func_wrap("get-arguments", |_s, (): ()| Ok((Vec::<String>::new(),)))?;
            i.func_wrap("initial-cwd", |_s, (): ()| Ok((None::<String>,)))?;
        }
        _ => {}
    }
    Ok(())
}

impl Prepared {
    /// Links `component`, makes one instance, reads `describe` and runs `configure` — so a bad
    /// configuration is refused at load, with the policy's own message.
    pub fn new(component: &Component, config_json: &str, sandbox: Sandbox) -> Result<(Self, Description), String> {
        let mut linker = linker()?;
        // The WASI interfaces a std guest imports. Answered harmlessly: randomness (hash-map
        // seeds), an empty environment and argument list (language runtimes read them at
        // start). Everything else — files, sockets, clocks, stdio — traps.
        let ty = component.component_type();
        for (name, _) in ty.imports(engine()) {
            define_benign_wasi(&mut linker, name).map_err(|e| format!("linking {name}: {e}"))?;
        }
        linker
            .define_unknown_imports_as_traps(component)
            .map_err(|e| format!("linking: {e}"))?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| format!("does not implement the conduit:policy world: {e:#}"))?;
        let pre = PolicyPre::new(pre).map_err(|e| format!("does not implement the conduit:policy world: {e:#}"))?;
        let mut prepared = Prepared {
            pre,
            name: Arc::from("(loading)"),
            config_json: config_json.to_string(),
            sandbox,
            pool: Mutex::new(Vec::new()),
            max_idle: std::thread::available_parallelism().map(|n| n.get() * 2).unwrap_or(4),
        };
        let mut first = prepared.instantiate_bare()?;
        let _ticking = arm(&mut first.store, sandbox.timeout * 100);
        let description = first
            .bindings
            .call_describe(&mut first.store)
            .map_err(|e| format!("describe failed: {e:#}"))?;
        prepared.name = Arc::from(description.name.as_str());
        first.store.data_mut().name = prepared.name.clone();
        prepared.configure(&mut first)?;
        prepared.release(first);
        Ok((prepared, description))
    }

    fn instantiate_bare(&self) -> Result<Instance, String> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.sandbox.memory_bytes)
            // Components built from other languages link several core instances (componentize-py:
            // a dozen); these caps only stop runaway growth.
            .instances(64)
            .tables(256)
            .memories(16)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            engine(),
            HostState {
                limits,
                memory_bytes: 0,
                name: self.name.clone(),
                call: None,
            },
        );
        store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
        store.epoch_deadline_callback(|ctx| {
            Ok(ctx
                .data()
                .call
                .map_or(wasmtime::UpdateDeadline::Interrupt, |c| c.update()))
        });
        let _ticking = arm(&mut store, self.sandbox.timeout * 100);
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| format!("instantiation failed: {}", describe_error(&e, self.sandbox)))?;
        Ok(Instance { store, bindings })
    }

    fn configure(&self, inst: &mut Instance) -> Result<(), String> {
        // Configuration may build large automata (100k terms): give it a generous deadline.
        let _ticking = arm(&mut inst.store, Duration::from_secs(30));
        match inst.bindings.call_configure(&mut inst.store, &self.config_json) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(format!("refused its configuration: {msg}")),
            Err(e) => Err(format!("configure {}", describe_error(&e, self.sandbox))),
        }
    }

    fn acquire(&self) -> Result<Instance, String> {
        if let Some(inst) = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(inst);
        }
        let mut inst = self.instantiate_bare()?;
        self.configure(&mut inst)?;
        Ok(inst)
    }

    /// Configures one instance and leaves it idle in the pool, unless `n` (or the pool's cap) are
    /// idle already. False when there was nothing to do or it failed (the request path then
    /// configures as before, and reports what fails). For a background thread: the first
    /// concurrent requests after a load then do not each wait for a `configure` — for the entities
    /// policy with 100,000 terms that is ~60 ms an instance in wasm.
    pub fn prewarm_one(&self, n: usize) -> bool {
        if self.idle() >= n.min(self.max_idle) {
            return false;
        }
        let Ok(mut inst) = self.instantiate_bare() else {
            return false;
        };
        if self.configure(&mut inst).is_err() {
            return false;
        }
        self.release(inst);
        true
    }

    /// Idle configured instances.
    pub fn idle(&self) -> usize {
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn release(&self, inst: Instance) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < self.max_idle {
            pool.push(inst);
        }
    }

    /// Runs `evaluate`. A failed instance is dropped, never reused.
    pub fn evaluate(&self, info: &RequestInfo, segments: &[Segment]) -> Result<Verdict, Failure> {
        let mut inst = self.acquire().map_err(Failure::Trap)?;
        let bytes: usize = segments.iter().map(|s| s.text.len()).sum();
        let deadline = self.sandbox.timeout + self.sandbox.per_mib.mul_f64(bytes as f64 / (1 << 20) as f64);
        let ticking = arm(&mut inst.store, deadline);
        let called = inst.bindings.call_evaluate(&mut inst.store, info, segments);
        drop(ticking);
        match called {
            Ok(v) => {
                self.release(inst);
                Ok(v)
            }
            Err(e) => Err(classify(&e, deadline, self.sandbox)),
        }
    }

    /// Linear memory of the largest idle instance, in bytes.
    pub fn memory_bytes(&self) -> usize {
        let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.iter().map(|i| i.store.data().memory_bytes).max().unwrap_or(0)
    }
}

/// Starts a call's deadline of `budget` (CPU time; see [`CallClock`]); the epoch ticks while
/// the returned guard is held.
fn arm(store: &mut Store<HostState>, budget: Duration) -> Ticking {
    let ticking = Ticking::start();
    store.data_mut().call = Some(CallClock::start(budget));
    store.set_epoch_deadline(ticks(budget));
    ticking
}

fn ticks(d: Duration) -> u64 {
    (d.as_micros() / TICK.as_micros()).max(1) as u64 + 1
}

fn classify(e: &wasmtime::Error, deadline: Duration, sandbox: Sandbox) -> Failure {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => Failure::Timeout(deadline),
        _ if is_oom(e) => Failure::OutOfMemory(sandbox.memory_bytes),
        _ => Failure::Trap(first_line(e)),
    }
}

fn is_oom(e: &wasmtime::Error) -> bool {
    let text = format!("{e:#}");
    text.contains("forcing trap when growing memory")
        || text.contains("memory allocation")
        || text.contains("out of memory")
}

fn describe_error(e: &wasmtime::Error, sandbox: Sandbox) -> String {
    classify(e, sandbox.timeout, sandbox).to_string()
}

fn first_line(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    text.lines()
        .next()
        .unwrap_or("unknown error")
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ticker sleeps while no guest code runs, and a call wakes it at once (not at its
    /// one-second timeout: a runaway guest would run that long).
    #[test]
    fn a_call_wakes_the_sleeping_ticker() {
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            tx.send(()).unwrap();
            IN_GUEST.wait_for_a_call()
        });
        rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(50)); // the waiter is waiting
        let ticking = Ticking::start();
        assert!(waiter.join().unwrap(), "woken by the call, not by the timeout");
        drop(ticking);
    }

    #[test]
    fn the_deadline_counts_cpu_time_with_a_wall_clock_backstop() {
        use wasmtime::UpdateDeadline;
        // Waiting (no CPU used) past the budget is not an overrun.
        let c = CallClock::start(Duration::from_millis(5));
        std::thread::sleep(Duration::from_millis(30));
        assert!(matches!(c.update(), UpdateDeadline::Continue(_)));
        // Spending the budget is.
        let c = CallClock::start(Duration::from_millis(5));
        let spin = Instant::now();
        while thread_cpu_time().saturating_sub(c.cpu_start) < Duration::from_millis(6) {
            assert!(
                spin.elapsed() < Duration::from_secs(10),
                "the thread CPU clock does not advance"
            );
        }
        assert!(matches!(c.update(), UpdateDeadline::Interrupt));
        // So is waiting past the backstop.
        let c = CallClock::start(Duration::from_millis(1));
        std::thread::sleep(WALL_MIN + Duration::from_millis(20));
        assert!(matches!(c.update(), UpdateDeadline::Interrupt));
    }

    /// A cached artifact is used only under the key it was written with, and only unaltered.
    #[test]
    fn cached_artifacts_are_authenticated_before_they_are_loaded() {
        let wasm = std::fs::read(crate::builtin::MISBEHAVE_WASM).unwrap();
        let engine = engine();
        let component = Component::new(engine, &wasm).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let digest: [u8; 32] = Sha256::digest(&wasm).into();
        let path = artifact_path(dir.path(), &digest, engine);
        let (ours, theirs) = (CacheKey::ephemeral(), CacheKey::ephemeral());
        store_artifact(&component, &path, &ours);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(load_artifact(engine, &path, &ours).is_some(), "our own artifact loads");
        assert!(
            load_artifact(engine, &path, &theirs).is_none(),
            "another key's MAC does not verify"
        );
        // One flipped byte of the native code: refused before wasmtime reads it.
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            load_artifact(engine, &path, &ours).is_none(),
            "an altered artifact is refused"
        );
        // A raw artifact planted without a MAC (what an older build wrote) is refused too.
        std::fs::write(&path, component.serialize().unwrap()).unwrap();
        assert!(load_artifact(engine, &path, &ours).is_none());
    }
}
