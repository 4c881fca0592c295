//! A re-route solver instance on disk, so the solver can be measured alone: `reroute_bench
//! --save-instance FILE` writes the instance it built, `reroute_solve FILE` solves it again
//! (a 1M-order `peak` instance loads in seconds instead of a minute of data set, routing and
//! candidates). Little-endian arrays after a magic and their lengths; a private format of
//! the benches, not a stable one.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use promised_engine::reroute::solver::{Candidate, Instance};

const MAGIC: &[u8; 8] = b"PRRINST1";

pub fn save(instance: &Instance, path: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(MAGIC)?;
    for len in [
        instance.capacity.len(),
        instance.starts.len(),
        instance.candidates.len(),
        instance.uses.len(),
        instance.stay.len(),
    ] {
        w.write_all(&(len as u64).to_le_bytes())?;
    }
    for &c in &instance.capacity {
        w.write_all(&c.to_le_bytes())?;
    }
    for &s in &instance.starts {
        w.write_all(&(s as u64).to_le_bytes())?;
    }
    for c in &instance.candidates {
        w.write_all(&c.cost.to_le_bytes())?;
        w.write_all(&c.first.to_le_bytes())?;
        w.write_all(&c.len.to_le_bytes())?;
    }
    for &(r, a) in &instance.uses {
        w.write_all(&r.to_le_bytes())?;
        w.write_all(&a.to_le_bytes())?;
    }
    for &s in &instance.stay {
        w.write_all(&s.unwrap_or(u32::MAX).to_le_bytes())?;
    }
    w.flush()?;
    Ok(())
}

pub fn load(path: &Path) -> anyhow::Result<Instance> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        bail!("{} is not a re-route instance file", path.display());
    }
    let mut lens = [0usize; 5];
    for l in &mut lens {
        *l = read_u64(&mut r)? as usize;
    }
    let [n_cap, n_starts, n_cand, n_uses, n_stay] = lens;
    // Reserve no more than the file can hold (a damaged header must not abort the process).
    let size = std::fs::metadata(path)?.len() as usize;
    if n_cap * 8 + n_starts * 8 + n_cand * 16 + n_uses * 8 + n_stay * 4 + 48 > size {
        bail!("{} is shorter than its header says", path.display());
    }
    let mut instance = Instance {
        capacity: Vec::with_capacity(n_cap),
        starts: Vec::with_capacity(n_starts),
        candidates: Vec::with_capacity(n_cand),
        uses: Vec::with_capacity(n_uses),
        stay: Vec::with_capacity(n_stay),
    };
    for _ in 0..n_cap {
        instance.capacity.push(read_u64(&mut r)?);
    }
    for _ in 0..n_starts {
        instance.starts.push(read_u64(&mut r)? as usize);
    }
    for _ in 0..n_cand {
        let cost = f64::from_bits(read_u64(&mut r)?);
        let (first, len) = (read_u32(&mut r)?, read_u32(&mut r)?);
        instance.candidates.push(Candidate { cost, first, len });
    }
    for _ in 0..n_uses {
        instance.uses.push((read_u32(&mut r)?, read_u32(&mut r)?));
    }
    for _ in 0..n_stay {
        let s = read_u32(&mut r)?;
        instance.stay.push((s != u32::MAX).then_some(s));
    }
    check(&instance).with_context(|| format!("{} is not a consistent instance", path.display()))?;
    Ok(instance)
}

/// What the solver assumes of an instance, so a damaged file is an error instead of a panic.
fn check(instance: &Instance) -> anyhow::Result<()> {
    let (starts, cands) = (&instance.starts, &instance.candidates);
    if starts.first().is_some_and(|&s| s != 0)
        || starts.windows(2).any(|w| w[0] > w[1])
        || starts.last().is_some_and(|&s| s != cands.len())
    {
        bail!("order starts do not cover the candidates in order");
    }
    if cands
        .iter()
        .any(|c| u64::from(c.first) + u64::from(c.len) > instance.uses.len() as u64)
    {
        bail!("a candidate's uses run past the end");
    }
    if instance
        .uses
        .iter()
        .any(|&(r, _)| r as usize >= instance.capacity.len())
    {
        bail!("a use names a resource past the end");
    }
    let n = starts.len().saturating_sub(1);
    if !instance.stay.is_empty() && instance.stay.len() != n {
        bail!("stays do not match the orders");
    }
    for (j, s) in instance.stay.iter().enumerate() {
        if s.is_some_and(|s| s as usize >= starts[j + 1] - starts[j]) {
            bail!("order {j} stays on a candidate it does not have");
        }
    }
    Ok(())
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}
