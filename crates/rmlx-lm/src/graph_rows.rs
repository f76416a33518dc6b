//! The batch engine's decode steps by graph replay: `graph_decode`'s idea for a group of
//! sequences. Launched op by op, a step over B sequences costs the host several microseconds
//! for each of its kernels, and attention still runs per sequence, so the host time grows with
//! B and dominates (8 sequences of the 8B shape: ~2,500 launches a step). Here the step of one
//! group (the same sequences in the same order) is recorded once and replayed with one launch.
//!
//! What changes between steps lives in device memory and is written before each replay: the
//! tokens (u32 `[B, 1]`) and the positions (i32 `[B]`; sequence b's caches write and attend at
//! element b). A recording lasts while the group stays the same and every cache has room: it
//! first reserves [`RESERVE`] positions in every cache. A group's first step runs ordinarily
//! (continuous batching changes groups often; a group seen once is not worth a recording), its
//! second through the same position-in-memory path uncaptured (compiling its kernels), its
//! third is recorded, and later ones replay. Only standard caches qualify; `RMLX_CUDA_GRAPH=0`
//! turns it off.

use crate::cache::{KvCache, STEP};
use crate::error::Result;
use crate::graph_decode::{self, buffer_ids, ensure_in_place};
use crate::models::LanguageModel;
use rmlx::cuda::graph::{record, StepGraph};
use rmlx::{ops, Array, Device, Dtype};

/// Positions every cache gets room for before a recording: how many steps it can last.
pub const RESERVE: usize = STEP;

/// A recorded step of one group and its device-resident inputs and output.
struct RowsGraph {
    graph: StepGraph,
    /// u32 `[B, 1]`.
    tokens: Array,
    /// i32 `[B]`.
    pos: Array,
    /// f32 `[B, vocab]`.
    logits: Array,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The group was seen for one step (run ordinarily).
    Seen,
    /// Its step ran once through the position-in-memory path: the next one records.
    Warm,
    /// Replaying `graph`.
    Recorded,
}

/// Graph replay for the batch engine's decode passes (one group at a time).
pub struct RowsReplay {
    on: bool,
    device: usize,
    /// The sequence ids of the group the state is about, in row order.
    group: Vec<u64>,
    state: State,
    graph: Option<RowsGraph>,
}

/// Whether every cache of every sequence is a standard one that holds positions.
fn eligible(caches: &[&mut [KvCache]]) -> bool {
    caches.iter().all(|c| {
        !c.is_empty()
            && c.iter()
                .all(|k| matches!(k, KvCache::Standard(_)) && !k.is_empty())
    })
}

/// Whether every cache can take one more token without growing.
fn has_room(caches: &[&mut [KvCache]]) -> bool {
    caches.iter().all(|c| graph_decode::has_room(c))
}

/// One decode step of `tokens: [B, 1]` with sequence b's caches writing at element b of
/// `pos: [B]`: the logits, f32 `[B, vocab]`.
fn build_step(
    model: &dyn LanguageModel,
    caches: &mut [&mut [KvCache]],
    tokens: &Array,
    pos: &Array,
) -> Result<Array> {
    for (b, c) in caches.iter_mut().enumerate() {
        let b = b as i64;
        let at = ops::slice(pos, &[b], &[b + 1], &[1])?;
        for k in c.iter_mut() {
            k.set_position_array(Some(at.clone()));
        }
    }
    let out = model.forward_rows(tokens, caches);
    for c in caches.iter_mut() {
        for k in c.iter_mut() {
            k.set_position_array(None);
        }
    }
    Ok(ops::astype(&out?, Dtype::F32))
}

fn all_buffer_ids(caches: &[&mut [KvCache]]) -> Result<Vec<usize>> {
    let mut ids = Vec::new();
    for c in caches {
        ids.extend(buffer_ids(c)?);
    }
    Ok(ids)
}

impl RowsReplay {
    /// For decode passes on `device`.
    pub fn new(device: Device) -> RowsReplay {
        RowsReplay {
            on: graph_decode::replay_enabled(device),
            device: device.index,
            group: Vec::new(),
            state: State::Seen,
            graph: None,
        }
    }

    /// Whether a recorded step is being replayed.
    pub fn active(&self) -> bool {
        self.graph.is_some()
    }

    /// Runs the decode step of the group `ids` (tokens `tokens`, caches `caches`, in the same
    /// row order) through replay where it applies, advancing the caches: the logits, f32
    /// `[B, vocab]` (a device array later steps leave alone). `None`: nothing was done, run an
    /// ordinary step.
    pub fn step(
        &mut self,
        model: &dyn LanguageModel,
        ids: &[u64],
        tokens: &[u32],
        caches: &mut [&mut [KvCache]],
    ) -> Result<Option<Array>> {
        if !self.on || !eligible(caches) {
            return Ok(None);
        }
        if ids != self.group {
            self.group = ids.to_vec();
            self.state = State::Seen;
            self.graph = None;
            return Ok(None);
        }
        if self.state == State::Recorded && !has_room(caches) {
            self.graph = None;
            self.state = State::Seen;
        }
        match self.state {
            State::Recorded => {
                let g = self.graph.as_ref().expect("recorded");
                let tb: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
                let pb: Vec<u8> = positions(caches).flat_map(i32::to_le_bytes).collect();
                g.graph.write(&g.tokens, &tb)?;
                g.graph.write(&g.pos, &pb)?;
                g.graph.replay()?;
                advance(caches)?;
                Ok(Some(g.graph.snapshot(&g.logits)?))
            }
            State::Seen => {
                for c in caches.iter_mut() {
                    for k in c.iter_mut() {
                        k.reserve(RESERVE)?;
                    }
                }
                let (t, p) = inputs(tokens, caches)?;
                let before = all_buffer_ids(caches)?;
                let logits = build_step(model, caches, &t, &p)?;
                logits.eval()?;
                self.check_in_place(&before, caches, "graph rows")?;
                self.state = State::Warm;
                Ok(Some(logits))
            }
            State::Warm => {
                if !has_room(caches) {
                    self.state = State::Seen;
                    return Ok(None);
                }
                let offsets: Vec<usize> = caches.iter().map(|c| c[0].offset()).collect();
                let (t, p) = inputs(tokens, caches)?;
                let before = all_buffer_ids(caches)?;
                let recorded = record(self.device, || {
                    let logits = build_step(model, caches, &t, &p)
                        .map_err(|e| rmlx::Error::runtime("graph rows", e.to_string()))?;
                    logits.eval()?;
                    Ok(logits)
                });
                let (graph, logits) = match recorded {
                    Ok(r) => r,
                    Err(e) => {
                        // Nothing ran: rewind the offsets the build advanced; replay stays off.
                        for (c, &o) in caches.iter_mut().zip(&offsets) {
                            graph_decode::rewind(c, o);
                        }
                        if std::env::var("RMLX_VERBOSE").is_ok_and(|v| v == "1") {
                            eprintln!("[rmlx] CUDA graph decode of rows off: {e}");
                        }
                        self.on = false;
                        return Ok(None);
                    }
                };
                self.check_in_place(&before, caches, "graph rows (recorded)")?;
                graph.replay()?;
                let out = graph.snapshot(&logits)?;
                self.graph = Some(RowsGraph {
                    graph,
                    tokens: t,
                    pos: p,
                    logits,
                });
                self.state = State::Recorded;
                Ok(Some(out))
            }
        }
    }

    /// [`ensure_in_place`] for the group's caches; a step that copied them turns replay off.
    fn check_in_place(
        &mut self,
        before: &[usize],
        caches: &[&mut [KvCache]],
        who: &str,
    ) -> Result<()> {
        let r = ensure_in_place(before, &all_buffer_ids(caches)?, who);
        if r.is_err() {
            self.on = false;
        }
        r
    }
}

/// Each sequence's position: where its caches write the step's token.
fn positions<'a>(caches: &'a [&mut [KvCache]]) -> impl Iterator<Item = i32> + 'a {
    caches.iter().map(|c| c[0].offset() as i32)
}

/// The step's device inputs: tokens `[B, 1]` and each sequence's position `[B]`.
fn inputs(tokens: &[u32], caches: &[&mut [KvCache]]) -> Result<(Array, Array)> {
    let pos: Vec<i32> = positions(caches).collect();
    Ok((
        Array::from_slice(tokens, &[tokens.len(), 1])?,
        Array::from_slice(&pos, &[pos.len()])?,
    ))
}

/// Counts the replayed token in every cache.
fn advance(caches: &mut [&mut [KvCache]]) -> Result<()> {
    for c in caches.iter_mut() {
        for k in c.iter_mut() {
            k.advance(1)?;
        }
    }
    Ok(())
}
