import { UDPipeError } from '../errors.js';
import type { Address } from '../transport/types.js';

export function checkPort(port: unknown, allowZero: boolean): void {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < (allowZero ? 0 : 1) || port > 65535) {
    throw new UDPipeError('ERR_INVALID_ARGUMENT', `port must be an integer from ${allowZero ? 0 : 1} to 65535, got ${String(port)}`);
  }
}

export function fmt(a: Address): string {
  return `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}`;
}

export function bindError(err: unknown, port: number, host: string | undefined): UDPipeError {
  const code = (err as { code?: string }).code;
  const where = `${host ?? 'all interfaces'} port ${port}`;
  const why =
    code === 'EADDRINUSE'
      ? 'the port is already in use (is another server running?)'
      : code === 'EADDRNOTAVAIL'
        ? "that address is not one of this machine's"
        : code === 'EACCES'
          ? 'permission denied (ports below 1024 need privileges)'
          : code === 'ENOTFOUND' || code === 'EAI_AGAIN'
            ? 'the host name does not resolve'
            : (err as Error).message;
  return new UDPipeError('ERR_BIND', `cannot listen on ${where}: ${why}`, { cause: err });
}
