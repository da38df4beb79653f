/**
 * A Connection's events as a plain array for tests that read them after driving the
 * connection by hand: every access to the array first drains `pollEvent()` into it,
 * so the array always holds everything raised so far, in order.
 */
import type { ConnectionEvent } from '../../src/protocol/config.js';
import type { Connection } from '../../src/protocol/connection/connection.js';

/** `conn` is a thunk, so the array can be made before the connection it records. */
export function recordEvents(conn: () => Connection, into: ConnectionEvent[] = []): ConnectionEvent[] {
  return new Proxy(into, {
    get(target, key, receiver) {
      const c = conn();
      for (let e = c.pollEvent(); e; e = c.pollEvent()) target.push(e);
      return Reflect.get(target, key, receiver);
    },
  });
}
