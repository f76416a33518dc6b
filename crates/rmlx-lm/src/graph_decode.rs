//! Decoding on the GPU by replaying one recorded step (a CUDA graph) per token.
//!
//! Built and launched op by op, a decode step costs the host several microseconds per kernel
//! (graph build, lookup, argument packing, launch): for a small model that is ten times the
//! GPU's own time. Here the step is recorded once (`rmlx::cuda::graph::record`) and replayed
//! with one launch. What changes between tokens lives in device memory: the token id and the
//! position (an i32 the caches write at and RoPE reads), written before each replay; attention
//! spans the cache's whole buffer under a mask built from that position, so the recorded step
//! is valid for every position below the buffer's capacity. When the cache must grow, the
//! graph is dropped, one ordinary step grows it, and the next step records again.
//!
//! Only standard caches qualify (rotating and quantized caches change shape or layout as they
//! go). `RMLX_CUDA_GRAPH=0` turns replay off.

use crate::cache::KvCache;
use crate::error::{LmError, Result};
use crate::models::LanguageModel;
use rmlx::cuda::graph::{record, StepGraph};
use rmlx::{ops, Array, Device, DeviceType, Dtype};
use std::sync::Arc;

/// Whether graph replay is on for decode steps on `device`: a GPU, unless `RMLX_CUDA_GRAPH=0`.
pub fn replay_enabled(device: Device) -> bool {
    device.kind == DeviceType::Gpu && std::env::var("RMLX_CUDA_GRAPH").map_or(true, |v| v != "0")
}

/// Whether graph replay may be used on `device` for `caches`.
pub fn eligible(device: Device, caches: &[KvCache]) -> bool {
    replay_enabled(device)
        && !caches.is_empty()
        && caches
            .iter()
            .all(|c| matches!(c, KvCache::Standard(_) | KvCache::Quantized(_)))
}

/// A recorded decode step and its device-resident inputs and outputs.
pub struct GraphDecoder {
    graph: StepGraph,
    /// u32 `[1, 1]`: the token fed in.
    token: Array,
    /// i32 `[1]`: its position.
    pos: Array,
    /// f32 `[1, vocab]`: the step's logits.
    logits: Array,
    /// u32 `[1]`: their argmax.
    argmax: Array,
    /// Positions the caches hold: the graph serves offsets below this.
    capacity: usize,
}

/// The address of each cache's buffers, to check that a step wrote them in place (a replayed
/// graph that copied them would lose every token but the last).
pub(crate) fn buffer_ids(caches: &[KvCache]) -> Result<Vec<usize>> {
    let mut ids = Vec::new();
    for a in caches.iter().flat_map(KvCache::storage) {
        ids.push(Arc::as_ptr(&a.data()?.buffer) as usize);
    }
    Ok(ids)
}

/// One decode step with the caches writing at `pos`: logits f32 `[1, vocab]` and argmax.
fn build_step(
    model: &dyn LanguageModel,
    caches: &mut [KvCache],
    token: &Array,
    pos: &Array,
) -> Result<(Array, Array)> {
    for c in caches.iter_mut() {
        c.set_position_array(Some(pos.clone()));
    }
    let out = model.forward_last(token, caches);
    for c in caches.iter_mut() {
        c.set_position_array(None);
    }
    let logits = ops::astype(&out?, Dtype::F32);
    let argmax = ops::argmax(&logits, Some(-1), false)?;
    let argmax = ops::astype(&ops::reshape(&argmax, &[1])?, Dtype::U32);
    Ok((logits, argmax))
}

/// An error unless a step left every KV buffer where it was (`before` and `after` from
/// [`buffer_ids`]): a replayed graph whose step copied a cache would lose every token but the
/// last. `who` names the path.
pub(crate) fn ensure_in_place(before: &[usize], after: &[usize], who: &str) -> Result<()> {
    if before != after {
        return Err(LmError::Generate(format!(
            "{who}: the step copied the KV cache instead of writing it in place"
        )));
    }
    Ok(())
}

/// Puts every cache of `caches` back to `offset` (after a recording that failed: the step's
/// writes never ran).
pub(crate) fn rewind(caches: &mut [KvCache], offset: usize) {
    for c in caches.iter_mut() {
        let n = c.offset() - offset;
        c.trim(n);
    }
}

/// Whether `caches` can take one more token without growing.
pub fn has_room(caches: &[KvCache]) -> bool {
    caches.iter().all(|c| c.offset() < c.capacity())
}

impl GraphDecoder {
    /// Runs one decode step of `token` through the position-in-memory path without recording
    /// (compiling its kernels), returning logits and argmax like an ordinary step.
    pub fn warm_step(
        model: &dyn LanguageModel,
        caches: &mut [KvCache],
        token: u32,
    ) -> Result<(Array, Array)> {
        let pos = Array::from_slice(&[caches[0].offset() as i32], &[1])?;
        let x = Array::from_slice(&[token], &[1, 1])?;
        let before = buffer_ids(caches)?;
        let (logits, argmax) = build_step(model, caches, &x, &pos)?;
        rmlx::eval(&[logits.clone(), argmax.clone()])?;
        ensure_in_place(&before, &buffer_ids(caches)?, "graph decode")?;
        Ok((logits, argmax))
    }

    /// Records the step for `token` at the caches' offset on GPU `device`, replays it once,
    /// and returns the decoder with that step's results in place.
    pub fn record(
        model: &dyn LanguageModel,
        caches: &mut [KvCache],
        device: usize,
        token: u32,
    ) -> Result<GraphDecoder> {
        let capacity = caches.iter().map(KvCache::capacity).min().unwrap_or(0);
        let before = buffer_ids(caches)?;
        let offset = caches[0].offset();
        let token_arr = Array::from_slice(&[token], &[1, 1])?;
        let pos = Array::from_slice(&[offset as i32], &[1])?;
        let recorded = record(device, || {
            let (logits, argmax) = build_step(model, caches, &token_arr, &pos)
                .map_err(|e| rmlx::Error::runtime("graph decode", e.to_string()))?;
            rmlx::eval(&[logits.clone(), argmax.clone()])?;
            Ok((logits, argmax))
        });
        let (graph, (logits, argmax)) = match recorded {
            Ok(r) => r,
            Err(e) => {
                // Nothing ran on the GPU: the buffers hold what they held; rewind the offsets.
                rewind(caches, offset);
                return Err(e.into());
            }
        };
        ensure_in_place(&before, &buffer_ids(caches)?, "graph decode (recorded)")?;
        graph.replay()?;
        Ok(GraphDecoder {
            graph,
            token: token_arr,
            pos,
            logits,
            argmax,
            capacity,
        })
    }

    /// Whether the recorded step serves a token at `offset`.
    pub fn serves(&self, offset: usize) -> bool {
        offset < self.capacity
    }

    /// Replays the step for `token` at the caches' offset and advances the caches by one.
    pub fn step(&self, caches: &mut [KvCache], token: u32) -> Result<()> {
        let offset = caches[0].offset();
        self.graph.write(&self.token, &token.to_le_bytes())?;
        self.graph
            .write(&self.pos, &(offset as i32).to_le_bytes())?;
        self.graph.replay()?;
        for c in caches.iter_mut() {
            c.advance(1)?;
        }
        Ok(())
    }

    /// The argmax of the last step's logits (waits for it).
    pub fn argmax(&self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.graph.read(&self.argmax, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// The last step's logits copied to the host, `[1, vocab]` f32.
    pub fn logits_host(&self) -> Result<Array> {
        let mut b = vec![0u8; self.logits.nbytes()];
        self.graph.read(&self.logits, &mut b)?;
        Ok(Array::from_bytes(&b, self.logits.shape(), Dtype::F32)?)
    }

    /// The last step's logits as a device array later steps leave alone.
    pub fn logits_snapshot(&self) -> Result<Array> {
        Ok(self.graph.snapshot(&self.logits)?)
    }

    /// Kernels (and copies) one replay runs.
    pub fn kernels(&self) -> usize {
        self.graph.kernels()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not tried yet for the current cache capacity: the next step runs the replayable path
    /// uncaptured (compiling its kernels).
    Cold,
    /// Its kernels are ready: the next step records.
    Warm,
    /// Not available (CPU, other caches, `RMLX_CUDA_GRAPH=0`, or a recording failed).
    Off,
}

/// One-token decode steps through graph replay where it applies: the state machine every
/// decode loop (generation, `rmlx bench`) shares. `step` returns false when the caller must
/// run an ordinary step instead (prefill, a cache about to grow, replay unavailable).
pub struct ReplayDecoder {
    graph: Option<GraphDecoder>,
    state: State,
    device: usize,
    /// The last step's logits and argmax when it ran uncaptured.
    warm: Option<(Array, Array)>,
}

impl ReplayDecoder {
    /// For decoding on `device` with `caches`.
    pub fn new(device: Device, caches: &[KvCache]) -> ReplayDecoder {
        ReplayDecoder {
            graph: None,
            state: if eligible(device, caches) {
                State::Cold
            } else {
                State::Off
            },
            device: device.index,
            warm: None,
        }
    }

    /// Whether replay is in use (a graph is recorded).
    pub fn active(&self) -> bool {
        self.graph.is_some()
    }

    /// Kernels one replay runs (0 before a recording).
    pub fn kernels(&self) -> usize {
        self.graph.as_ref().map_or(0, GraphDecoder::kernels)
    }

    /// Runs the decode step for `token` at the caches' offset; false: nothing was done, run
    /// an ordinary step. A failed recording turns replay off (with `RMLX_VERBOSE=1` saying why).
    pub fn step(
        &mut self,
        model: &dyn LanguageModel,
        caches: &mut [KvCache],
        token: u32,
    ) -> Result<bool> {
        self.warm = None;
        if self.state == State::Off {
            return Ok(false);
        }
        let offset = caches[0].offset();
        if self.graph.as_ref().is_some_and(|g| !g.serves(offset)) {
            // The caches are full: an ordinary step grows them, then record again.
            self.graph = None;
            self.state = State::Cold;
        }
        if let Some(g) = &self.graph {
            g.step(caches, token)?;
            return Ok(true);
        }
        if !has_room(caches) {
            return Ok(false);
        }
        if self.state == State::Cold {
            self.warm = Some(GraphDecoder::warm_step(model, caches, token)?);
            self.state = State::Warm;
            return Ok(true);
        }
        match GraphDecoder::record(model, caches, self.device, token) {
            Ok(g) => {
                self.graph = Some(g);
                Ok(true)
            }
            Err(e) => {
                if std::env::var("RMLX_VERBOSE").is_ok_and(|v| v == "1") {
                    eprintln!("[rmlx] CUDA graph decode off: {e}");
                }
                self.state = State::Off;
                Ok(false)
            }
        }
    }

    fn no_step() -> LmError {
        LmError::Generate("graph decode: no step has run".into())
    }

    /// The argmax of the last step's logits.
    pub fn argmax(&self) -> Result<u32> {
        match (&self.warm, &self.graph) {
            (Some((_, a)), _) => Ok(a.item::<u32>()?),
            (None, Some(g)) => g.argmax(),
            (None, None) => Err(Self::no_step()),
        }
    }

    /// The last step's f32 logits `[1, vocab]`, on the host.
    pub fn logits_host(&self) -> Result<Array> {
        match (&self.warm, &self.graph) {
            (Some((l, _)), _) => Ok(l.clone()),
            (None, Some(g)) => g.logits_host(),
            (None, None) => Err(Self::no_step()),
        }
    }

    /// The last step's f32 logits `[1, vocab]`, left on the device.
    pub fn logits(&self) -> Result<Array> {
        match (&self.warm, &self.graph) {
            (Some((l, _)), _) => Ok(l.clone()),
            (None, Some(g)) => g.logits_snapshot(),
            (None, None) => Err(Self::no_step()),
        }
    }
}
