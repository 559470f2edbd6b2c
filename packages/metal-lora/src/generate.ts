import type { LlamaForCausalLM } from '@metal-lora/nn';
import { noGrad, slice, tensor, tidy } from '@metal-lora/tensor';
import type { TextTokenizer } from './tokenizer';

/** Greedy continuation of `prompt` by `count` tokens (the whole context is re-run each step). */
export async function generate(model: LlamaForCausalLM, tokenizer: TextTokenizer, prompt: string, count: number, maxContext = 64): Promise<string> {
  const ids = tokenizer.encode(prompt);
  for (let i = 0; i < count; i++) {
    const context = ids.slice(-maxContext);
    const logits = tidy(() =>
      noGrad(() => slice(model.forward(tensor(Int32Array.from(context), [1, context.length])), [0, context.length - 1], [1, context.length])),
    );
    const values = await logits.data();
    logits.dispose();
    let best = 0;
    for (let v = 1; v < values.length; v++) if (values[v] > values[best]) best = v;
    ids.push(best);
  }
  return tokenizer.decode(ids.slice(tokenizer.encode(prompt).length), { skipSpecialTokens: true });
}
