/**
 * The official run's optimiser (train_ds.py's DeepSpeed config): AdamW with betas (0.9, 0.95), eps 1e-8,
 * weight decay 0; global gradient-norm clipping at 1.0; WarmupDecayLR. The update follows torch 1.13's
 * _single_tensor_adamw in float32, operation by operation, so one step matches PyTorch's to rounding.
 */

const f = Math.fround;

export interface AdamWOptions {
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
}
export const LISA_ADAMW: AdamWOptions = { lr: 3e-4, betas: [0.9, 0.95], eps: 1e-8, weightDecay: 0 };

export interface AdamState {
  step: number;
  expAvg: Float32Array;
  expAvgSq: Float32Array;
}

/**
 * torch.nn.utils.clip_grad_norm_ (torch 1.13): total = ‖(‖g_p‖₂)_p‖₂, coef = min(1, maxNorm / (total + 1e-6)),
 * every gradient scaled in place. The norm is accumulated in float64 (torch's float32 reduction differs from
 * it by ~1e-5 relative, DeepSpeed's ZeRO-2 norm is float64 too). Returns the norm before clipping.
 */
export function clipGradNorm(grads: Iterable<Float32Array>, maxNorm: number): { norm: number; coef: number } {
  const list = [...grads];
  let sumSq = 0;
  for (const gr of list) {
    let s = 0;
    for (let i = 0; i < gr.length; i++) s += gr[i]! * gr[i]!;
    sumSq += s;
  }
  const norm = Math.sqrt(sumSq);
  const coef = Math.min(1, f(maxNorm / f(f(norm) + 1e-6)));
  if (coef < 1) for (const gr of list) for (let i = 0; i < gr.length; i++) gr[i] = f(gr[i]! * coef);
  return { norm, coef };
}

/** One AdamW update of `param` in place (torch 1.13 _single_tensor_adamw, float32 tensors, Python-float scalars). */
export function adamwStep(param: Float32Array, grad: Float32Array, state: AdamState, o: AdamWOptions, lr = o.lr): void {
  state.step += 1;
  const [b1, b2] = o.betas;
  const decay = f(1 - lr * o.weightDecay);
  const bc1 = 1 - b1 ** state.step,
    bc2 = 1 - b2 ** state.step;
  const stepSize = f(lr / bc1),
    bc2Sqrt = f(Math.sqrt(bc2));
  const fb1 = f(b1),
    fb2 = f(b2),
    a1 = f(1 - b1),
    a2 = f(1 - b2),
    eps = f(o.eps);
  const m = state.expAvg,
    v = state.expAvgSq;
  for (let i = 0; i < param.length; i++) {
    const gi = grad[i]!;
    if (decay !== 1) param[i] = f(param[i]! * decay);
    m[i] = f(f(m[i]! * fb1) + f(gi * a1));
    v[i] = f(f(v[i]! * fb2) + f(f(gi * gi) * a2));
    const denom = f(f(Math.sqrt(v[i]!) / bc2Sqrt) + eps);
    param[i] = f(param[i]! - f(stepSize * f(m[i]! / denom)));
  }
}

export function newAdamState(n: number): AdamState {
  return { step: 0, expAvg: new Float32Array(n), expAvgSq: new Float32Array(n) };
}

/**
 * DeepSpeed's WarmupDecayLR (linear warm-up from warmupMinLr to warmupMaxLr over warmupSteps, then linear
 * decay to 0 at totalSteps): get_lr(it). DeepSpeed ≤ 0.15.2 runs optimiser step 0 at the optimiser's own lr
 * and step k ≥ 1 at get_lr(k − 1) (the scheduler steps after the optimiser); `lrForStep` reproduces that.
 */
export interface WarmupDecayLR {
  totalSteps: number;
  warmupSteps: number;
  warmupMinLr: number;
  warmupMaxLr: number;
}
export const LISA_SCHEDULE: WarmupDecayLR = { totalSteps: 5000, warmupSteps: 100, warmupMinLr: 0, warmupMaxLr: 3e-4 };

export function getLr(s: WarmupDecayLR, it: number): number {
  const warm = Math.max(2, s.warmupSteps);
  const gamma = it < warm ? it / warm : Math.max(0, (s.totalSteps - it) / Math.max(1, s.totalSteps - warm));
  return s.warmupMinLr + (s.warmupMaxLr - s.warmupMinLr) * gamma;
}
export function lrForStep(s: WarmupDecayLR, step: number, optimizerLr: number): number {
  return step === 0 ? optimizerLr : getLr(s, step - 1);
}

/** AdamW over named tensors, keeping each one's moments between steps (torch skips tensors without a gradient). */
export class AdamW {
  readonly states = new Map<string, AdamState>();
  constructor(readonly options: AdamWOptions = LISA_ADAMW) {}

  step(
    params: Iterable<{ name: string; value: Float32Array }>,
    grads: ReadonlyMap<string, Float32Array | null>,
    lr = this.options.lr,
  ): void {
    for (const p of params) {
      const gr = grads.get(p.name);
      if (!gr) continue;
      let s = this.states.get(p.name);
      if (!s) {
        s = newAdamState(p.value.length);
        this.states.set(p.name, s);
      }
      adamwStep(p.value, gr, s, this.options, lr);
    }
  }
}
