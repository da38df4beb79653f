export * from './bytes.js';
export * from './checksum.js';
export * from './classic.js';
export * from './constants.js';
export * from './errors.js';
export * from './frames.js';
export * from './handshake.js';
export * from './packet.js';
