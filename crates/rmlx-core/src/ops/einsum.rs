//! `einsum`: Einstein summation over labelled axes, composed from `diagonal`, `sum`,
//! `transpose`, `reshape` and `matmul` (one batched matmul per pair of operands, left to
//! right; integer operands multiply and sum instead, since matmul takes floats).

use crate::array::Array;
use crate::error::{Error, Result};
use crate::ops::{broadcast_to, diagonal, matmul, multiply, reshape, sum, transpose};
use crate::shape::fmt_shape;

fn err(msg: impl Into<String>) -> Error {
    Error::invalid("einsum", msg)
}

/// One operand's labels, with `...` expanded to the labels `'\u{100}'..` of its broadcast
/// axes (right-aligned across operands, as NumPy).
fn labels(term: &str, ndim: usize, ell: usize, i: usize) -> Result<Vec<char>> {
    let explicit: Vec<char> = term.chars().filter(|c| *c != '.').collect();
    if let Some(c) = explicit.iter().find(|c| !c.is_ascii_alphabetic()) {
        return Err(err(format!(
            "invalid subscript character {c:?} in {term:?}"
        )));
    }
    match term.find("...") {
        None => {
            if term.contains('.') {
                return Err(err(format!(
                    "invalid subscripts {term:?}: '.' only in '...'"
                )));
            }
            if explicit.len() != ndim {
                return Err(err(format!(
                    "invalid number of subscripts {} for input {i} with {ndim} dimensions",
                    explicit.len()
                )));
            }
            Ok(explicit)
        }
        Some(p) => {
            if term.matches("...").count() > 1 || term.replace("...", "").contains('.') {
                return Err(err(format!(
                    "invalid subscripts {term:?}: one '...' at most"
                )));
            }
            if explicit.len() > ndim {
                return Err(err(format!(
                    "invalid number of subscripts {} for input {i} with {ndim} dimensions",
                    explicit.len()
                )));
            }
            let e = ndim - explicit.len();
            let before: Vec<char> = term[..p].chars().collect();
            let after: Vec<char> = term[p + 3..].chars().collect();
            let mut v = before;
            v.extend((ell - e..ell).map(|k| char::from_u32(0x100 + k as u32).expect("valid")));
            v.extend(after);
            Ok(v)
        }
    }
}

/// `x` with its repeated labels reduced to their diagonal (`ii` → `i`).
fn undiagonal(mut x: Array, mut l: Vec<char>) -> Result<(Array, Vec<char>)> {
    while let Some((i, j)) = (0..l.len())
        .flat_map(|i| (i + 1..l.len()).map(move |j| (i, j)))
        .find(|&(i, j)| l[i] == l[j])
    {
        if x.shape()[i] != x.shape()[j] {
            return Err(err(format!(
                "label {:?} repeats on axes of sizes {} and {}",
                l[i],
                x.shape()[i],
                x.shape()[j]
            )));
        }
        let c = l[i];
        x = diagonal(&x, 0, i as i32, j as i32)?;
        l.remove(j);
        l.remove(i);
        l.push(c);
    }
    Ok((x, l))
}

/// `x` (labels `l`) with the labels `keep` does not contain summed away.
fn sum_out(x: Array, l: Vec<char>, keep: impl Fn(char) -> bool) -> Result<(Array, Vec<char>)> {
    let axes: Vec<i32> = (0..l.len())
        .filter(|&i| !keep(l[i]))
        .map(|i| i as i32)
        .collect();
    if axes.is_empty() {
        return Ok((x, l));
    }
    let l2 = l.into_iter().filter(|&c| keep(c)).collect();
    Ok((sum(&x, Some(&axes), false)?, l2))
}

/// `x` (labels `l`) transposed to `order` (a permutation of `l`), then reshaped into groups
/// of consecutive labels (`groups` label counts).
fn arrange(x: &Array, l: &[char], order: &[char], groups: &[usize]) -> Result<Array> {
    let perm: Vec<i32> = order
        .iter()
        .map(|c| l.iter().position(|d| d == c).expect("label present") as i32)
        .collect();
    let t = transpose(x, Some(&perm))?;
    let mut shape = Vec::with_capacity(groups.len());
    let mut k = 0;
    for &g in groups {
        shape.push(t.shape()[k..k + g].iter().product::<usize>() as i64);
        k += g;
    }
    reshape(&t, &shape)
}

/// Einstein summation: `subscripts` such as `"ij,jk->ik"`, `"bhqd,bhkd->bhqk"`, `"ii->i"`,
/// `"...ij,...jk"` (implicit output: the labels used once, sorted, after the broadcast
/// axes). Labels of size 1 broadcast.
#[track_caller]
pub fn einsum(subscripts: &str, operands: &[Array]) -> Result<Array> {
    let s: String = subscripts.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match s.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (s.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != operands.len() {
        return Err(err(format!(
            "{} subscript terms for {} operands",
            terms.len(),
            operands.len()
        )));
    }
    // Broadcast (`...`) axes: the most any operand has.
    let ell = terms
        .iter()
        .zip(operands)
        .filter(|(t, _)| t.contains("..."))
        .map(|(t, x)| {
            x.ndim()
                .saturating_sub(t.chars().filter(|c| *c != '.').count())
        })
        .max()
        .unwrap_or(0);
    let raw: Vec<Vec<char>> = terms
        .iter()
        .zip(operands)
        .enumerate()
        .map(|(i, (t, x))| labels(t, x.ndim(), ell, i))
        .collect::<Result<_>>()?;
    // Counted before diagonals are taken: a label repeated within one term is summed too.
    let uses = |c: char| raw.iter().flatten().filter(|&&d| d == c).count();
    let mut ins: Vec<(Array, Vec<char>)> = Vec::with_capacity(operands.len());
    for (x, l) in operands.iter().zip(&raw) {
        ins.push(undiagonal(x.clone(), l.clone())?);
    }
    // The output labels.
    let ell_labels: Vec<char> = (0..ell)
        .map(|k| char::from_u32(0x100 + k as u32).expect("valid"))
        .collect();
    let out: Vec<char> = match &rhs {
        Some(r) => {
            let ndim = r.chars().filter(|c| *c != '.').count() + ell * r.contains("...") as usize;
            let o = labels(r, ndim, ell, 0)
                .map_err(|_| err(format!("invalid output subscripts {r:?}")))?;
            for (k, c) in o.iter().enumerate() {
                if o[..k].contains(c) {
                    return Err(err("repeat indices not allowed in output"));
                }
                if !ins.iter().any(|(_, l)| l.contains(c)) {
                    return Err(err(format!(
                        "output subscript {c:?} does not appear in the inputs"
                    )));
                }
            }
            o
        }
        None => {
            let mut once: Vec<char> = Vec::new();
            for c in raw.iter().flatten() {
                if c.is_ascii_alphabetic() && uses(*c) == 1 {
                    once.push(*c);
                }
            }
            once.sort_unstable();
            ell_labels
                .iter()
                .copied()
                .filter(|c| ins.iter().any(|(_, l)| l.contains(c)))
                .chain(once)
                .collect()
        }
    };
    // Every label's size (size 1 broadcasts); operands broadcast to it.
    let mut size: std::collections::HashMap<char, usize> = Default::default();
    for (x, l) in &ins {
        for (k, c) in l.iter().enumerate() {
            let d = x.shape()[k];
            match size.get(c).copied() {
                Some(e) if e != d && e != 1 && d != 1 => {
                    return Err(err(format!(
                        "label {c:?} has sizes {e} and {d} (operand of shape {})",
                        fmt_shape(x.shape())
                    )))
                }
                Some(e) if e >= d => {}
                _ => {
                    size.insert(*c, d);
                }
            }
        }
    }
    let grow = |x: Array, l: &[char]| -> Result<Array> {
        let full: Vec<usize> = l.iter().map(|c| size[c]).collect();
        if full.as_slice() == x.shape() {
            Ok(x)
        } else {
            broadcast_to(&x, &full)
        }
    };
    // Labels needed after operand `i`: the output's and the later operands'.
    let needed =
        |i: usize, c: char| out.contains(&c) || ins[i + 1..].iter().any(|(_, l)| l.contains(&c));
    let (x0, l0) = ins[0].clone();
    let (mut acc, mut la) = sum_out(x0, l0, |c| needed(0, c))?;
    for (i, (xb, lb)) in ins.iter().enumerate().skip(1) {
        let (xb, lb) = (xb.clone(), lb.clone());
        let (xb, lb) = sum_out(xb, lb, |c| needed(i, c) || la.contains(&c))?;
        let (xa, xb) = (grow(acc, &la)?, grow(xb, &lb)?);
        let batch: Vec<char> = la
            .iter()
            .copied()
            .filter(|c| lb.contains(c) && needed(i, *c))
            .collect();
        let contract: Vec<char> = la
            .iter()
            .copied()
            .filter(|c| lb.contains(c) && !needed(i, *c))
            .collect();
        let fa: Vec<char> = la.iter().copied().filter(|c| !lb.contains(c)).collect();
        let fb: Vec<char> = lb.iter().copied().filter(|c| !la.contains(c)).collect();
        let mut new_l: Vec<char> = batch.clone();
        new_l.extend(&fa);
        new_l.extend(&fb);
        let new_shape: Vec<i64> = new_l.iter().map(|c| size[c] as i64).collect();
        if xa.dtype().is_float() || xb.dtype().is_float() {
            // [batch, fa, contract] @ [batch, contract, fb]
            let oa: Vec<char> = batch.iter().chain(&fa).chain(&contract).copied().collect();
            let ob: Vec<char> = batch.iter().chain(&contract).chain(&fb).copied().collect();
            let a3 = arrange(&xa, &la, &oa, &[batch.len(), fa.len(), contract.len()])?;
            let b3 = arrange(&xb, &lb, &ob, &[batch.len(), contract.len(), fb.len()])?;
            acc = reshape(&matmul(&a3, &b3)?, &new_shape)?;
        } else {
            // Integers: align both on [batch, fa, fb, contract], multiply, sum the contraction.
            let all: Vec<char> = new_l.iter().chain(&contract).copied().collect();
            let expand = |x: &Array, l: &[char]| -> Result<Array> {
                let present: Vec<char> = all.iter().copied().filter(|c| l.contains(c)).collect();
                let t = arrange(x, l, &present, &vec![1; present.len()])?;
                let shape: Vec<i64> = all
                    .iter()
                    .map(|c| if l.contains(c) { size[c] as i64 } else { 1 })
                    .collect();
                reshape(&t, &shape)
            };
            let p = multiply(&expand(&xa, &la)?, &expand(&xb, &lb)?)?;
            let axes: Vec<i32> = (new_l.len()..all.len()).map(|k| k as i32).collect();
            acc = if axes.is_empty() {
                p
            } else {
                sum(&p, Some(&axes), false)?
            };
        }
        la = new_l;
    }
    let (acc, la) = sum_out(acc, la, |c| out.contains(&c))?;
    let acc = grow(acc, &la)?;
    let perm: Vec<i32> = out
        .iter()
        .map(|c| {
            la.iter()
                .position(|d| d == c)
                .expect("output label present") as i32
        })
        .collect();
    transpose(&acc, Some(&perm))
}
