/**
 * The embedded texts, generated from small templates with a seeded generator (no download, no
 * third-party text): a "kitchen journal" the default base model was pre-trained on, and a
 * "ship's log" in another style that the main job fine-tunes it on.
 */
import { randomBits } from '@metal-lora/tensor';

function picker(seed: number) {
  let counter = 0;
  return <T>(items: readonly T[]): T => items[randomBits(seed, counter++) % items.length];
}

const cooks = ['the cook', 'my aunt', 'the baker', 'grandpa', 'the new chef', 'our neighbour'];
const verbs = ['chops', 'stirs', 'slices', 'tastes', 'bakes', 'boils', 'peels', 'roasts'];
const foods = ['the onions', 'a carrot', 'the bread', 'some garlic', 'the soup', 'two apples', 'the beans', 'a pumpkin'];
const endings = ['and smiles', 'for supper', 'very slowly', 'before noon', 'with butter', 'in the old pot'];

/** `count` kitchen-journal sentences (the base model's pre-training text). */
export function kitchenJournal(count: number, seed = 1): string[] {
  const pick = picker(seed);
  return Array.from({ length: count }, () => `${pick(cooks)} ${pick(verbs)} ${pick(foods)} ${pick(endings)}.`);
}

const winds = ['north', 'south', 'east', 'west', 'north-east', 'south-west'];
const seas = ['calm', 'choppy', 'rough', 'glassy', 'heavy'];
const sightings = ['two gulls', 'a whale', 'no land', 'a fishing boat', 'dolphins', 'a lighthouse'];

/** `count` ship's-log entries (the fine-tuning text: a style the base model has never seen). */
export function shipsLog(count: number, seed = 2): string[] {
  const pick = picker(seed);
  return Array.from({ length: count }, (_, i) => `day ${(i % 40) + 1}: wind ${pick(winds)}, seas ${pick(seas)}, we sighted ${pick(sightings)}.`);
}
