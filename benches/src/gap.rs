//! The public GAP benchmark instances (`../shared/benchmarks/gap/`): OR-Library format files and
//! the table of optimal or best-known values (`BKS.csv`), read into the optimiser's problems.
//!
//! OR-Library format: the number of problems (Yagiura's files omit it), then per problem `m n`,
//! the m x n cost matrix, the m x n resource matrix, the m capacities. Agents are nodes, jobs
//! are orders; every job has an option at every agent.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use promised_engine::optimise::{Agent, OrderOption, Problem};

/// Where the shared benchmark data lives, beside the repository.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/benchmarks/gap")
}

/// The problems of one OR-Library file, in order.
pub fn read_orlib(path: &Path) -> anyhow::Result<Vec<Problem>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let numbers: Vec<i64> = text
        .split_ascii_whitespace()
        .map(|w| {
            w.parse::<i64>()
                .with_context(|| format!("{}: {w:?} is not a number", path.display()))
        })
        .collect::<Result<_, _>>()?;
    // Files with a problem count start with it; Yagiura's start with `m n`.
    let with_count = |n: usize| -> Option<Vec<Problem>> {
        let mut at = 1;
        let mut problems = Vec::new();
        for _ in 0..n {
            let (p, next) = one(&numbers, at)?;
            problems.push(p);
            at = next;
        }
        (at == numbers.len()).then_some(problems)
    };
    if let Some(&count) = numbers.first()
        && count > 0
        && let Some(problems) = with_count(count as usize)
    {
        return Ok(problems);
    }
    match one(&numbers, 0) {
        Some((p, end)) if end == numbers.len() => Ok(vec![p]),
        _ => bail!("{}: not an OR-Library GAP file", path.display()),
    }
}

/// One problem from `numbers[at..]`; the problem and where the next one starts.
fn one(numbers: &[i64], at: usize) -> Option<(Problem, usize)> {
    let (m, n) = (
        usize::try_from(*numbers.get(at)?).ok()?,
        usize::try_from(*numbers.get(at + 1)?).ok()?,
    );
    if m == 0 || n == 0 {
        return None;
    }
    let costs = numbers.get(at + 2..at + 2 + m * n)?;
    let loads = numbers.get(at + 2 + m * n..at + 2 + 2 * m * n)?;
    let caps = numbers.get(at + 2 + 2 * m * n..at + 2 + 2 * m * n + m)?;
    let mut p = Problem {
        agents: caps.iter().map(|&c| Agent { capacity: c as f64 }).collect(),
        ..Problem::default()
    };
    for j in 0..n {
        p.push_order((0..m).map(|i| OrderOption {
            agent: i as u32,
            cost: costs[i * n + j] as f64,
            load: loads[i * n + j] as f64,
        }));
    }
    Some((p, at + 2 + 2 * m * n + m))
}

/// One row of `BKS.csv` for minimisation.
#[derive(Clone, Debug)]
pub struct Known {
    pub instance: String,
    /// Relative to the data directory.
    pub file: String,
    /// 1-based index of the problem within the file.
    pub problem: usize,
    pub value: f64,
    /// `optimal` or `best-known`.
    pub status: String,
}

/// The minimisation rows of `BKS.csv`.
pub fn known_minima(dir: &Path) -> anyhow::Result<Vec<Known>> {
    let path = dir.join("BKS.csv");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.splitn(10, ',').collect();
        if f.len() < 9 {
            bail!("{}:{}: too few fields", path.display(), i + 1);
        }
        if f[5] != "min" {
            continue;
        }
        rows.push(Known {
            instance: f[0].to_string(),
            file: f[1].to_string(),
            problem: f[2]
                .parse()
                .with_context(|| format!("{}:{}: problem", path.display(), i + 1))?,
            value: f[6]
                .parse()
                .with_context(|| format!("{}:{}: value", path.display(), i + 1))?,
            status: f[7].to_string(),
        });
    }
    Ok(rows)
}

/// A problem in the explicit JSON form (`promised solve --problem`): nodes `N0..`, orders `J0..`.
pub fn to_explicit_json(p: &Problem) -> String {
    let mut out = String::from("{\"nodes\": [");
    for (i, a) in p.agents.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&format!("{{\"id\": \"N{i}\", \"capacity\": {}}}", a.capacity));
    }
    out.push_str("],\n \"orders\": [");
    for j in 0..p.n_orders() {
        if j > 0 {
            out.push_str(",\n  ");
        }
        out.push_str(&format!("{{\"id\": \"J{j}\", \"options\": ["));
        for (k, o) in p.options_of(j).iter().enumerate() {
            if k > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!(
                "{{\"node\": \"N{}\", \"cost\": {}, \"load\": {}}}",
                o.agent, o.cost, o.load
            ));
        }
        out.push_str("]}");
    }
    out.push_str("]}\n");
    out
}
