// The environment variables broker.toml passes to the plugin (`env = [...]`), over
// `wasi:cli/environment`. A plugin that reads them is built against the world that imports it
// (plugin-sdk/js/wit/world.wit), as one that makes HTTP requests is.

import { getEnvironment } from 'wasi:cli/environment@0.2.12';

/** The value of environment variable `name` as broker.toml passed it to the plugin, or null. */
export function env(name) {
  for (const [key, value] of getEnvironment()) if (key === name) return value;
  return null;
}
