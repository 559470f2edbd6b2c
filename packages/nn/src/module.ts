import { ShapeError, type Tensor, ValueError } from '@metal-lora/tensor';

/** Result of {@link Module.loadWeights}: names that did not line up. */
export interface LoadReport {
  missing: string[];
  unexpected: string[];
  mismatched: { name: string; expected: number[]; got: number[] }[];
}

/** Parameters that never train (registered with `constant`). */
const CONSTANTS = new WeakSet<Tensor>();

/**
 * A tree of parameters and child modules with dotted names (`model.layers.0.self_attn.q_proj.weight`),
 * as in MLX `nn.Module` and PyTorch. Subclasses register parameters with {@link param} and
 * children with {@link child}; a parameter is trainable while its tensor has `requiresGrad`.
 */
export class Module {
  /** Dropout and other train-only behaviour is on while true. */
  training = true;
  private readonly params = new Map<string, Tensor>();
  private readonly children = new Map<string, Module>();

  /** Registers (or replaces) a parameter. Returns the tensor. */
  protected param(name: string, value: Tensor, trainable = true): Tensor {
    value.requiresGrad = trainable;
    this.params.set(name, value);
    return value;
  }

  /** Registers a parameter that never trains (`unfreeze` passes it by): a quantized layer's packed weights. */
  protected constant(name: string, value: Tensor): Tensor {
    CONSTANTS.add(value);
    return this.param(name, value, false);
  }

  /** Registers (or replaces) a child module. Returns it. */
  protected child<M extends Module>(name: string, module: M): M {
    this.children.set(name, module);
    return module;
  }

  /** This module's own parameter by name (no walk of the tree: layers read these on every call). */
  protected own(name: string): Tensor | undefined {
    return this.params.get(name);
  }

  /** A registered child (layers look their children up at call time, so replacing one works). */
  protected sub<M extends Module>(name: string): M {
    const m = this.children.get(name);
    if (!m) throw new ValueError('Module', `no child '${name}'`, [...this.children.keys()].join(', '), name);
    return m as M;
  }

  /** Replaces the child at a dotted path (used by LoRA conversion and merging). */
  setModule(path: string, module: Module): void {
    const parts = path.split('.');
    const last = parts.pop()!;
    let parent: Module = this;
    for (const p of parts) {
      const next = parent.children.get(p);
      if (!next) throw new ValueError('setModule', `no module at '${path}'`, 'an existing module path', path);
      parent = next;
    }
    if (!parent.children.has(last)) throw new ValueError('setModule', `no module at '${path}'`, 'an existing module path', path);
    parent.children.set(last, module);
    parent.onChildReplaced(last, module);
  }

  /** Hook for subclasses that keep typed references to children. */
  protected onChildReplaced(_name: string, _module: Module): void {}

  /** The child module at a dotted path, or undefined. */
  getModule(path: string): Module | undefined {
    let m: Module | undefined = this;
    for (const p of path.split('.')) m = m?.children.get(p);
    return m;
  }

  /** Every parameter with its dotted name, depth first in registration order. */
  namedParameters(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [n, t] of this.params) out.push([prefix + n, t]);
    for (const [n, c] of this.children) out.push(...c.namedParameters(`${prefix}${n}.`));
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  /** Parameters that receive gradients (not frozen). */
  trainableParameters(): [string, Tensor][] {
    return this.namedParameters().filter(([, t]) => t.requiresGrad);
  }

  /** This module and every descendant with its dotted path ('' for this one). */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix.replace(/\.$/, ''), this]];
    for (const [n, c] of this.children) out.push(...c.namedModules(`${prefix}${n}.`));
    return out;
  }

  private select(keys: readonly string[] | undefined, op: string): [string, Tensor][] {
    const all = this.namedParameters();
    if (!keys) return all;
    const chosen = all.filter(([n]) => keys.some((k) => n === k || n.startsWith(`${k}.`) || n.endsWith(`.${k}`)));
    if (chosen.length === 0)
      throw new ValueError(
        op,
        'the keys match no parameter',
        `names such as ${all
          .slice(0, 3)
          .map(([n]) => n)
          .join(', ')}`,
        keys.join(', '),
      );
    return chosen;
  }

  /** Stops gradients for all parameters, or those matching `keys` (a name, a module path, or a name suffix). */
  freeze(keys?: readonly string[]): this {
    for (const [, t] of this.select(keys, 'freeze')) t.requiresGrad = false;
    return this;
  }

  /** Lets gradients reach all parameters, or those matching `keys`; constants (quantized weights) stay frozen. */
  unfreeze(keys?: readonly string[]): this {
    for (const [, t] of this.select(keys, 'unfreeze')) if (!CONSTANTS.has(t)) t.requiresGrad = true;
    return this;
  }

  train(on = true): this {
    for (const [, m] of this.namedModules()) m.training = on;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Parameters by name (the tensors themselves, not copies). */
  stateDict(): Record<string, Tensor> {
    return Object.fromEntries(this.namedParameters());
  }

  /**
   * Copies weights in by name (each parameter keeps its tensor handle and trainability). Reports
   * missing, unexpected and mis-shaped names; with `strict` (default) any of them throws.
   */
  loadWeights(weights: Record<string, Tensor>, options: { strict?: boolean } = {}): LoadReport {
    const strict = options.strict ?? true;
    const own = new Map(this.namedParameters());
    const report: LoadReport = { missing: [], unexpected: [], mismatched: [] };
    for (const name of own.keys()) if (!(name in weights)) report.missing.push(name);
    for (const [name, value] of Object.entries(weights)) {
      const target = own.get(name);
      if (!target) report.unexpected.push(name);
      else if (target.shape.join() !== value.shape.join()) report.mismatched.push({ name, expected: [...target.shape], got: [...value.shape] });
    }
    if (strict && (report.missing.length || report.unexpected.length || report.mismatched.length)) {
      const parts = [
        report.missing.length ? `missing ${report.missing.slice(0, 5).join(', ')}${report.missing.length > 5 ? ` (+${report.missing.length - 5})` : ''}` : '',
        report.unexpected.length ? `unexpected ${report.unexpected.slice(0, 5).join(', ')}` : '',
        report.mismatched.length
          ? `mis-shaped ${report.mismatched
              .map((m) => `${m.name} [${m.got}] vs [${m.expected}]`)
              .slice(0, 3)
              .join(', ')}`
          : '',
      ].filter(Boolean);
      throw new ShapeError('loadWeights', 'weights do not match the model', 'every parameter by name and shape', parts.join('; '));
    }
    for (const [name, value] of Object.entries(weights)) {
      const target = own.get(name);
      if (!target || target.shape.join() !== value.shape.join()) continue;
      const converted = value.dtype === target.dtype ? value.share() : value.cast(target.dtype);
      const moved = converted.backend === target.backend ? converted : null;
      if (!moved) throw new ValueError('loadWeights', `weight '${name}' lives on another backend`, `'${target.backend.name}'`, `'${converted.backend.name}'`);
      target.assign(moved);
      moved.dispose();
    }
    return report;
  }
}

/** A list of modules named 0, 1, 2, … (`layers.3.mlp`). */
export class ModuleList<M extends Module = Module> extends Module {
  readonly items: M[];
  constructor(items: M[]) {
    super();
    this.items = items;
    items.forEach((m, i) => {
      this.child(String(i), m);
    });
  }
  protected override onChildReplaced(name: string, module: Module): void {
    this.items[Number(name)] = module as M;
  }
  get length(): number {
    return this.items.length;
  }
}
