/** WGSL sources are imported as text (tsup `loader: { '.wgsl': 'text' }`, a vitest plugin, a Node hook). */
declare module '*.wgsl' {
  const source: string;
  export default source;
}
