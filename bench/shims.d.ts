// Just enough typing for the two comparison libraries the benchmark drives (neither ships types).
declare module 'udx-native' {
  import type { EventEmitter } from 'node:events';
  export interface UdxSocket extends EventEmitter {
    bind(port: number, host: string): void;
    address(): { port: number };
    close(): Promise<void>;
  }
  export interface UdxStream extends EventEmitter {
    connect(socket: UdxSocket, remoteId: number, port: number, host: string): void;
    write(data: Uint8Array): boolean;
    trySend(data: Uint8Array): void;
    destroy(): void;
  }
  export default class UDX {
    createSocket(): UdxSocket;
    createStream(id: number): UdxStream;
  }
}

declare module 'enet' {
  export interface EnetPacket {
    data(): Buffer;
  }
  export interface EnetPeer {
    on(event: 'message', fn: (packet: EnetPacket, channel: number) => void): void;
    on(event: 'connect', fn: () => void): void;
    send(channel: number, packet: EnetPacket, done?: (err?: unknown) => void): boolean;
    disconnect(): void;
  }
  export interface EnetHost {
    on(event: 'connect', fn: (peer: EnetPeer) => void): void;
    address(): { port: number };
    start(intervalMs: number): void;
    connect(addr: { address: string; port: number }, channels: number, data: number, cb: (err: unknown, peer: EnetPeer) => void): EnetPeer;
    destroy(): void;
  }
  interface HostOptions {
    address?: { address: string; port: number };
    peers: number;
    channels: number;
    down: number;
    up: number;
  }
  const enet: {
    Packet: new (data: Buffer | string, flags?: number) => EnetPacket;
    PACKET_FLAG: { RELIABLE: number; UNSEQUENCED: number };
    createServer(opts: HostOptions, cb: (err: unknown, host: EnetHost) => void): void;
    createClient(opts: HostOptions, cb: (err: unknown, host: EnetHost) => void): void;
  };
  export default enet;
}
