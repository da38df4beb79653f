/**
 * Every error udpipe throws or rejects with is a UDPipeError with a stable `code`
 * (listed in README.md, "Errors"). Codes never change meaning; messages may improve.
 */
export type UDPipeErrorCode =
  | 'ERR_INVALID_OPTION'
  | 'ERR_INVALID_ARGUMENT'
  | 'ERR_MESSAGE_TOO_LARGE'
  /** No longer thrown (0.2): a full queue drops the message with a 'dropped' event. Kept so code that names it compiles. */
  | 'ERR_QUEUE_FULL'
  | 'ERR_NOT_CONNECTED'
  | 'ERR_CLOSED'
  | 'ERR_WRONG_ROLE'
  | 'ERR_ALREADY_STARTED'
  | 'ERR_BIND'
  | 'ERR_RESOLVE'
  | 'ERR_HANDSHAKE_TIMEOUT'
  | 'ERR_BAD_TOKEN'
  | 'ERR_SERVER_FULL'
  | 'ERR_ENCRYPTION_MISMATCH'
  | 'ERR_SOCKET';

export class UDPipeError extends Error {
  override readonly name = 'UDPipeError';
  constructor(
    readonly code: UDPipeErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
