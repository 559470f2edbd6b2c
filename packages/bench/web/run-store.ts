/**
 * A stopped training run kept in the browser (IndexedDB): the run's state file (the adapter, the
 * optimizer's moments and the position, as `train` writes it) and the page's settings, one per
 * model. It survives a reload, so Resume continues where Stop left off.
 */
export interface SavedRun {
  step: number;
  /** Whether the run reached its iterations (else it was stopped). */
  finished: boolean;
  settings: { rank: number; layers: number; scale: number; iters: number; batch: number; maxLength: number; lr: number; evalEvery: number };
  /** The curve so far (training loss per iteration, validation losses), drawn again on resume. */
  losses: number[];
  valLosses: { step: number; loss: number }[];
  /** `training_state.safetensors`'s bytes. */
  state: Uint8Array;
}

const DB = 'metal-lora-finetune';
const STORE = 'runs';

function open(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(new Error(`IndexedDB: could not open the run store (${request.error?.message ?? 'blocked'})`));
  });
}

async function transact<T>(mode: IDBTransactionMode, fn: (store: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  const db = await open();
  try {
    return await new Promise<T>((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = fn(tx.objectStore(STORE));
      // Resolved when the transaction commits: a save is on disk before training goes on.
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(new Error(`IndexedDB: ${tx.error?.message ?? 'the transaction failed'} (is the browser's storage full?)`));
      tx.onabort = tx.onerror;
    });
  } finally {
    db.close();
  }
}

export function saveRun(key: string, run: SavedRun): Promise<IDBValidKey> {
  return transact('readwrite', (s) => s.put(run, key));
}

export async function loadRun(key: string): Promise<SavedRun | null> {
  return ((await transact('readonly', (s) => s.get(key))) as SavedRun | undefined) ?? null;
}

export function clearRun(key: string): Promise<undefined> {
  return transact('readwrite', (s) => s.delete(key));
}
