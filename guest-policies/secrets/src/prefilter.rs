//! The keyword prefilter: every occurrence of every rule keyword, case-insensitively, in one pass
//! of a few instructions per byte — cheap in Wasm, where there is no SIMD substring search.
//!
//! Each byte maps to a 6-bit code (letters folded to one case; bytes that no keyword contains
//! map to 0). The codes of three bytes form an 18-bit trigram, and a 32 KiB bitset says whether
//! some keyword is filed under it. Only every other position is tested: a keyword that starts
//! at an even position is filed under its first trigram, one at an odd position under its second
//! (or, when it is shorter than four bytes, under "any byte, then its first two"). Only at a set
//! bit are the keywords filed there compared with the text, each at the start it implies. Short
//! keywords stand under every trigram they are part of. When more than 63 distinct bytes occur
//! in the keywords, some share a code: that adds candidates, never misses, since every candidate
//! is compared byte by byte.
//!
//! It replaces an overlapping Aho-Corasick DFA: on the benchmark's 1 MiB of token-dense prompt
//! text the keyword pass went from 4.1 ms to 1.6 ms natively (the same 23,886 hits). What would
//! go further: a Teddy-style simd128 search for the rare vendor keywords, with the dense name
//! words (`token`, `key`, `access`) found by a word-boundary pass (docs/performance.md).

/// The compiled keyword set.
pub(crate) struct Keywords {
    code: [u8; 256],
    /// Bit `t` set: some keyword is filed under trigram `t`.
    bits: Box<[u64; TRIGRAMS / 64]>,
    /// Per bitset word, how many bits are set in the words before it: with a popcount, the rank
    /// of a set trigram among all set trigrams, in O(1).
    rank: Box<[u32; TRIGRAMS / 64]>,
    /// Per set trigram in rank order, its range in `entries`.
    ranges: Vec<(u32, u32)>,
    /// (keyword, where it starts relative to the tested position), grouped by trigram.
    entries: Vec<(u16, i8)>,
    /// Lower-cased keywords.
    patterns: Vec<Box<[u8]>>,
}

const TRIGRAMS: usize = 1 << 18;
/// Any code: a keyword shorter than its trigram, or a byte before it.
const ANY: Option<u32> = None;

impl Keywords {
    /// `patterns` are matched ASCII-case-insensitively; at most 65,536, none empty.
    pub(crate) fn new(patterns: &[String]) -> Result<Self, String> {
        if patterns.len() > usize::from(u16::MAX) + 1 {
            return Err(format!(
                "secrets policy: {} distinct keywords; at most 65,536",
                patterns.len()
            ));
        }
        let patterns: Vec<Box<[u8]>> = patterns
            .iter()
            .map(|p| p.as_bytes().to_ascii_lowercase().into_boxed_slice())
            .collect();
        let mut code = [0u8; 256];
        let mut next = 1u8;
        for p in &patterns {
            if p.is_empty() {
                return Err("secrets policy: an empty keyword".into());
            }
            for &b in p.iter() {
                if code[usize::from(b)] == 0 {
                    code[usize::from(b)] = next;
                    next = if next == 63 { 1 } else { next + 1 };
                }
            }
        }
        for b in b'A'..=b'Z' {
            code[usize::from(b)] = code[usize::from(b.to_ascii_lowercase())];
        }
        // Only even positions are tested. A keyword at an even place is filed under its first
        // trigram; at an odd place, under the trigram one byte into it (four bytes or more) or
        // the trigram one byte before it (shorter keywords: any code, then its first two bytes).
        let mut filed: Vec<(u32, i8, u16)> = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let c = |k: usize| p.get(k).map(|&b| u32::from(code[usize::from(b)]));
            let k = i as u16;
            for t in expand([c(0), c(1), c(2)]) {
                filed.push((t, 0, k));
            }
            let odd = if p.len() >= 4 {
                (expand([c(1), c(2), c(3)]), -1)
            } else {
                (expand([ANY, c(0), c(1)]), 1)
            };
            for t in odd.0 {
                filed.push((t, odd.1, k));
            }
        }
        // Within a trigram, by start: a hit order the caller can rely on.
        filed.sort_unstable();
        let mut bits = Box::new([0u64; TRIGRAMS / 64]);
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for (i, &(t, _, _)) in filed.iter().enumerate() {
            bits[(t >> 6) as usize] |= 1 << (t & 63);
            match ranges.last_mut() {
                Some(last) if i > 0 && filed[i - 1].0 == t => last.1 += 1,
                _ => ranges.push((i as u32, i as u32 + 1)),
            }
        }
        let mut rank = Box::new([0u32; TRIGRAMS / 64]);
        let mut before = 0u32;
        for (r, word) in rank.iter_mut().zip(bits.iter()) {
            *r = before;
            before += word.count_ones();
        }
        Ok(Self {
            code,
            bits,
            rank,
            ranges,
            entries: filed.into_iter().map(|(_, d, k)| (k, d)).collect(),
            patterns,
        })
    }

    /// Calls `hit(start, end, keyword)` for every occurrence, overlapping ones included, in order
    /// of `start`.
    pub(crate) fn for_each(&self, hay: &[u8], mut hit: impl FnMut(usize, usize, usize)) {
        let code = |b: u8| u32::from(self.code[usize::from(b)]);
        let n = hay.len();
        // Every other position, each trigram from three independent loads: half the positions,
        // no dependency from one to the next.
        let mut q = 0;
        while q + 3 <= n {
            let w = (code(hay[q]) << 12) | (code(hay[q + 1]) << 6) | code(hay[q + 2]);
            if self.bits[(w >> 6) as usize] & (1 << (w & 63)) != 0 {
                self.verify(hay, q, w, &mut hit);
            }
            q += 2;
        }
        // The last positions, padded with code 0.
        while q < n {
            let at = |k: usize| hay.get(q + k).map_or(0, |&b| code(b));
            let w = (at(0) << 12) | (at(1) << 6) | at(2);
            if self.bits[(w >> 6) as usize] & (1 << (w & 63)) != 0 {
                self.verify(hay, q, w, &mut hit);
            }
            q += 2;
        }
    }

    /// Compares the keywords filed under trigram `w` with the text around position `q`.
    #[inline(never)]
    fn verify(&self, hay: &[u8], q: usize, w: u32, hit: &mut impl FnMut(usize, usize, usize)) {
        let (word, bit) = (self.bits[(w >> 6) as usize], 1u64 << (w & 63));
        let rank = self.rank[(w >> 6) as usize] + (word & (bit - 1)).count_ones();
        let (from, to) = self.ranges[rank as usize];
        for &(k, delta) in &self.entries[from as usize..to as usize] {
            let Some(start) = q.checked_add_signed(isize::from(delta)) else {
                continue;
            };
            let p = &self.patterns[usize::from(k)];
            let end = start + p.len();
            if end <= hay.len() && hay[start..end].eq_ignore_ascii_case(p) {
                hit(start, end, usize::from(k));
            }
        }
    }
}

/// The trigrams a pattern of three codes (or any) stands for.
fn expand(codes: [Option<u32>; 3]) -> Vec<u32> {
    let mut out = vec![0u32];
    for c in codes {
        out = match c {
            Some(c) => out.into_iter().map(|t| (t << 6) | c).collect(),
            None => out
                .into_iter()
                .flat_map(|t| (0..64).map(move |x| (t << 6) | x))
                .collect(),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(patterns: &[&str], hay: &str) -> Vec<(usize, usize, usize)> {
        let k = Keywords::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap();
        let mut out = Vec::new();
        k.for_each(hay.as_bytes(), |s, e, p| out.push((s, e, p)));
        out
    }

    #[test]
    fn every_occurrence_overlapping_and_case_folded() {
        assert_eq!(
            hits(&["token", "ok", "tok", "x"], "TOKEN tok x"),
            [(0, 5, 0), (0, 3, 2), (1, 3, 1), (6, 9, 2), (7, 9, 1), (10, 11, 3)]
        );
        // Keywords at the very start and end, of every length.
        assert_eq!(hits(&["ab", "a", "abc"], "ab"), [(0, 2, 0), (0, 1, 1)]);
        assert_eq!(hits(&["q~"], "xxQ~"), [(2, 4, 0)]);
        assert!(hits(&["token"], "toke").is_empty());
    }

    #[test]
    fn the_same_as_a_naive_search_on_random_text() {
        // More than 63 distinct bytes in the keywords: codes are shared, nothing is missed.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet: Vec<u8> = (b'!'..=b'~').collect();
        let patterns: Vec<String> = (0..200)
            .map(|_| {
                let len = 1 + (next() % 6) as usize;
                (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char)
                    .collect()
            })
            .collect();
        let hay: Vec<u8> = (0..20_000)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let k = Keywords::new(&patterns).unwrap();
        let mut got = Vec::new();
        k.for_each(&hay, |s, e, p| got.push((s, e, p)));
        assert!(got.windows(2).all(|w| w[0].0 <= w[1].0), "hits come in order of start");
        let mut want = Vec::new();
        for s in 0..hay.len() {
            for (p, pat) in k.patterns.iter().enumerate() {
                if s + pat.len() <= hay.len() && hay[s..s + pat.len()].eq_ignore_ascii_case(pat) {
                    want.push((s, s + pat.len(), p));
                }
            }
        }
        got.sort_unstable();
        want.sort_unstable();
        assert!(!want.is_empty());
        assert_eq!(got, want);
    }
}
