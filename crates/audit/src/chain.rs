//! The audit files on disk: day files, the chain head, the retention anchor; recovery after a crash,
//! verification, and reading records back in order.
//!
//! ```text
//! <dir>/2026-11-27.jsonl   one record per line, in seq order; the chain runs across files
//! <dir>/HEAD               {"seq":N,"hash":"…"}: the last synced record (catches a cut tail)
//! <dir>/ANCHOR             {"seq":N,"prev":"…"}: where the chain starts after retention
//! ```

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{AuditRecord, ZERO_HASH, line_hash};
use conduit_core::error::{Error, Result};

/// The last record of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Its seq (0 before the first record).
    pub seq: u64,
    /// Its line hash.
    pub hash: String,
}

impl Head {
    fn genesis() -> Head {
        Head {
            seq: 0,
            hash: ZERO_HASH.into(),
        }
    }
}

/// Where the chain starts once retention removed its beginning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// Seq of the oldest kept record.
    pub seq: u64,
    /// Its `prev`.
    pub prev: String,
}

/// `<dir>/YYYY-MM-DD.jsonl` for a UTC day number.
pub fn day_path(dir: &Path, day: i64) -> PathBuf {
    dir.join(format!("{}.jsonl", conduit_core::clock::format_date(day * 86_400)))
}

/// The day files, oldest first, with their day numbers.
pub fn day_files(dir: &Path) -> Result<Vec<(i64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::msg(format!(
                "reading the audit directory {}: {e}",
                dir.display()
            )));
        }
    };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".jsonl")) else {
            continue;
        };
        if let Some(t) = conduit_core::clock::parse_date_or_time(stem).filter(|_| stem.len() == 10) {
            files.push((t.div_euclid(86_400), entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Finds the chain head after a start or a crash. A line a crash cut short (no newline) was never
/// acknowledged: it is removed, with a warning.
pub fn recover(dir: &Path) -> Result<Head> {
    for (_, path) in day_files(dir)?.iter().rev() {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::msg(format!("opening {}: {e}", path.display())))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let tail = read_tail(&mut file, len)?;
        let complete = match tail.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => 0,
        };
        let cut = tail.len() - complete;
        if cut > 0 {
            tracing::warn!(file = %path.display(), bytes = cut, "removed a torn last audit line left by a crash (that request was never acknowledged)");
            file.set_len(len - cut as u64)
                .map_err(|e| Error::msg(format!("truncating {}: {e}", path.display())))?;
            file.sync_all().ok();
        }
        let lines = &tail[..complete];
        let Some(last) = lines[..lines.len().saturating_sub(1)]
            .split(|&b| b == b'\n')
            .next_back()
        else {
            continue;
        };
        if last.is_empty() {
            continue;
        }
        let record: SeqOnly = serde_json::from_slice(last).map_err(|e| {
            Error::msg(format!(
                "the last audit line in {} is not a record ({e}); run `conduit audit verify`",
                path.display()
            ))
        })?;
        return Ok(Head {
            seq: record.seq,
            hash: line_hash(last),
        });
    }
    Ok(read_head(dir)?.unwrap_or_else(Head::genesis))
}

/// Reads enough of the end of a file to hold its last complete line (and any torn tail after it).
fn read_tail(file: &mut File, len: u64) -> Result<Vec<u8>> {
    let io = |e: std::io::Error| Error::msg(format!("reading the audit tail: {e}"));
    let mut window = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(window);
        let mut buf = Vec::with_capacity((len - start) as usize);
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        Read::by_ref(file).take(len - start).read_to_end(&mut buf).map_err(io)?;
        if start == 0 || buf.iter().filter(|&&b| b == b'\n').count() >= 2 {
            // Whole lines only: drop the partial line at the front of the window.
            if start > 0
                && let Some(i) = buf.iter().position(|&b| b == b'\n')
            {
                buf.drain(..=i);
            }
            return Ok(buf);
        }
        window *= 4;
    }
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
    #[serde(default)]
    prev: String,
}

/// Writes `HEAD` atomically.
pub fn write_head(dir: &Path, head: &Head) -> Result<()> {
    write_json(dir, "HEAD", head)
}

fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let bytes = serde_json::to_vec(value)?;
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, dir.join(name)))
        .map_err(|e| Error::msg(format!("writing {}: {e}", dir.join(name).display())))
}

fn read_json<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Result<Option<T>> {
    match std::fs::read(dir.join(name)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::msg(format!("{} is not valid: {e}", dir.join(name).display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::msg(format!("reading {}: {e}", dir.join(name).display()))),
    }
}

/// The recorded head, if any.
pub fn read_head(dir: &Path) -> Result<Option<Head>> {
    read_json(dir, "HEAD")
}

/// Deletes day files before `cutoff_day`, first moving `ANCHOR` to the oldest record kept.
/// Returns how many files went.
pub fn prune(dir: &Path, cutoff_day: i64) -> Result<usize> {
    let files = day_files(dir)?;
    let (old, kept): (Vec<_>, Vec<_>) = files.into_iter().partition(|(d, _)| *d < cutoff_day);
    if old.is_empty() {
        return Ok(0);
    }
    let mut anchor = None;
    for (_, path) in &kept {
        let file = File::open(path).map_err(|e| Error::msg(format!("opening {}: {e}", path.display())))?;
        let mut first = Vec::new();
        BufReader::new(file)
            .read_until(b'\n', &mut first)
            .map_err(|e| Error::msg(format!("reading {}: {e}", path.display())))?;
        if first.ends_with(b"\n") {
            let r: SeqOnly = serde_json::from_slice(&first[..first.len() - 1])?;
            anchor = Some(Anchor {
                seq: r.seq,
                prev: r.prev,
            });
            break;
        }
    }
    let anchor = match anchor {
        Some(a) => a,
        // Nothing newer on disk: the chain continues after the recorded head.
        None => {
            let head = recover(dir)?;
            Anchor {
                seq: head.seq + 1,
                prev: head.hash,
            }
        }
    };
    write_json(dir, "ANCHOR", &anchor)?;
    for (_, path) in &old {
        std::fs::remove_file(path).map_err(|e| Error::msg(format!("removing {}: {e}", path.display())))?;
    }
    Ok(old.len())
}

/// What `conduit audit verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// The chain is intact.
    pub ok: bool,
    /// Records checked.
    pub records: u64,
    /// First and last seq seen.
    pub first_seq: Option<u64>,
    /// Last seq seen.
    pub last_seq: Option<u64>,
    /// Hash of the last record (record it elsewhere to pin today's log).
    pub head_hash: String,
    /// Day files read.
    pub files: usize,
    /// The first problem, naming the record.
    pub problem: Option<String>,
    /// The seq of the checkpoint held outside these files (the store) that the chain was checked
    /// against, if there was one within what the files keep.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_seq: Option<u64>,
}

/// Re-walks the chain: every line must hash to the next line's `prev`, seqs must follow without a
/// gap from `ANCHOR` (or 1), and the end must reach `HEAD`. Stops at the first break.
pub fn verify(dir: &Path) -> Result<Verification> {
    verify_against(dir, None)
}

/// As [`verify`], and also against a checkpoint of the chain's head kept somewhere the files'
/// writer cannot rewrite (the store): the record at its seq must still hash to it, and the files
/// must reach it. A log rewritten consistently from some record on — files and `HEAD` alike —
/// passes [`verify`] but not this.
pub fn verify_against(dir: &Path, checkpoint: Option<&Head>) -> Result<Verification> {
    let anchor: Option<Anchor> = read_json(dir, "ANCHOR")?;
    let head = read_head(dir)?;
    let files = day_files(dir)?;
    let (mut expect_seq, mut expect_prev) = match &anchor {
        Some(a) => (a.seq, a.prev.clone()),
        None => (1, ZERO_HASH.to_string()),
    };
    let mut v = Verification {
        ok: true,
        records: 0,
        first_seq: None,
        last_seq: None,
        head_hash: expect_prev.clone(),
        files: files.len(),
        problem: None,
        checkpoint_seq: None,
    };
    let mut last_id = String::new();
    let fail = |v: &mut Verification, msg: String| {
        v.ok = false;
        v.problem = Some(msg);
    };
    // Retention never moves the anchor past the head, and the checkpoint follows the head: an
    // anchor past the checkpoint was moved to hide what it covers.
    if let (Some(c), Some(a)) = (checkpoint, &anchor)
        && c.seq < a.seq
        && c.seq > 0
    {
        fail(
            &mut v,
            format!(
                "ANCHOR starts the log at record {} but the store's checkpoint is record {}: the log's beginning was cut past what the store pinned",
                a.seq, c.seq
            ),
        );
        return Ok(v);
    }
    'files: for (_, path) in &files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
        let file = File::open(path).map_err(|e| Error::msg(format!("opening {}: {e}", path.display())))?;
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let mut line = Vec::with_capacity(2048);
        let mut lineno = 0u64;
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::msg(format!("reading {}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            lineno += 1;
            if !line.ends_with(b"\n") {
                // Being written right now (a running gateway), or torn by a crash: not yet chained.
                break;
            }
            let body = &line[..line.len() - 1];
            // The whole record, not only its chain fields: a log verify passes, export can read
            // (fuzzing found `{"seq":1,"prev":"0…0"}` passing verify while export refused it).
            let r: crate::AuditRecord = match serde_json::from_slice(body) {
                Ok(r) => r,
                Err(e) => {
                    fail(
                        &mut v,
                        format!("{name} line {lineno} is not a valid record ({e}): it was altered"),
                    );
                    break 'files;
                }
            };
            if anchor.is_some() && v.records == 0 && r.seq < expect_seq {
                // Older than the anchor: retention is removing this file right now.
                continue;
            }
            if r.seq > expect_seq {
                let missing = if r.seq - expect_seq == 1 {
                    format!("record {expect_seq} was removed")
                } else {
                    format!("records {expect_seq}–{} were removed", r.seq - 1)
                };
                fail(
                    &mut v,
                    format!(
                        "{missing}: {name} line {lineno} holds record {} ({})",
                        r.seq, r.request_id
                    ),
                );
                break 'files;
            }
            if r.seq < expect_seq {
                fail(
                    &mut v,
                    format!(
                        "{name} line {lineno} repeats or reorders record {} ({}); expected {expect_seq}",
                        r.seq, r.request_id
                    ),
                );
                break 'files;
            }
            if r.prev != expect_prev {
                let msg = if v.records == 0 {
                    format!(
                        "record {} ({}) does not start the chain where ANCHOR says: the beginning was altered",
                        r.seq, r.request_id
                    )
                } else {
                    format!(
                        "record {} ({last_id}) was altered: its hash no longer matches the `prev` of record {} ({name} line {lineno})",
                        r.seq - 1,
                        r.seq
                    )
                };
                fail(&mut v, msg);
                break 'files;
            }
            v.first_seq.get_or_insert(r.seq);
            v.last_seq = Some(r.seq);
            v.records += 1;
            expect_seq = r.seq + 1;
            expect_prev = line_hash(body);
            if let Some(c) = checkpoint.filter(|c| c.seq == r.seq) {
                v.checkpoint_seq = Some(c.seq);
                if c.hash != expect_prev {
                    fail(
                        &mut v,
                        format!(
                            "record {} ({}) is not the record the store's checkpoint holds: the log was rewritten from there on ({name} line {lineno})",
                            r.seq, r.request_id
                        ),
                    );
                    break 'files;
                }
            }
            last_id = r.request_id;
        }
    }
    v.head_hash = expect_prev.clone();
    if v.ok
        && let Some(c) = checkpoint
        && c.seq >= expect_seq
    {
        fail(
            &mut v,
            format!(
                "records after {} were removed: the store's checkpoint says the log reached record {}",
                expect_seq - 1,
                c.seq
            ),
        );
    }
    if v.ok
        && let Some(h) = head
    {
        let last = expect_seq - 1;
        if h.seq > last {
            fail(
                &mut v,
                format!(
                    "records after {last} were removed: the head says the log reaches record {}",
                    h.seq
                ),
            );
        } else if h.seq == last && h.seq > 0 && h.hash != expect_prev {
            fail(
                &mut v,
                format!("record {last} ({last_id}) was altered: its hash no longer matches HEAD"),
            );
        }
    }
    Ok(v)
}

/// Which records to read back.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Start time ≥ this (Unix ms).
    pub since_ms: Option<i64>,
    /// Start time < this (Unix ms).
    pub until_ms: Option<i64>,
    /// Only this team.
    pub team: Option<String>,
    /// Only this key id.
    pub key: Option<String>,
}

impl Filter {
    fn matches(&self, r: &AuditRecord) -> bool {
        self.since_ms.is_none_or(|t| r.start_ms >= t)
            && self.until_ms.is_none_or(|t| r.start_ms < t)
            && self.team.as_ref().is_none_or(|t| r.team.as_ref() == Some(t))
            && self.key.as_ref().is_none_or(|k| r.key_id.as_ref() == Some(k))
    }
}

/// Calls `each` for every record matching `filter`, in chain order, reading one line at a time
/// (constant memory), with the line as stored. Stops early when `each` returns `false`.
pub fn scan(dir: &Path, filter: &Filter, mut each: impl FnMut(AuditRecord, &[u8]) -> bool) -> Result<u64> {
    // A record lands in the file of the day it ended, or a later one (day files never go back in
    // time when the wall clock does: see the writer), never an earlier one. So files from the day
    // before `since` on are opened, and every later one: a clock set back may have filed a record
    // that started before `until` after it.
    let from_day = filter.since_ms.map(|t| t.div_euclid(86_400_000) - 1);
    let mut seen = 0;
    for (day, path) in day_files(dir)? {
        if from_day.is_some_and(|d| day < d) {
            continue;
        }
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // pruned meanwhile
            Err(e) => return Err(Error::msg(format!("opening {}: {e}", path.display()))),
        };
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let mut line = Vec::with_capacity(2048);
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::msg(format!("reading {}: {e}", path.display())))?;
            if n == 0 || !line.ends_with(b"\n") {
                break;
            }
            let record: AuditRecord = serde_json::from_slice(&line[..line.len() - 1]).map_err(|e| {
                Error::msg(format!(
                    "{} holds a line that is not an audit record ({e}); run `conduit audit verify`",
                    path.display()
                ))
            })?;
            if filter.matches(&record) {
                seen += 1;
                if !each(record, &line[..line.len() - 1]) {
                    return Ok(seen);
                }
            }
        }
    }
    Ok(seen)
}
