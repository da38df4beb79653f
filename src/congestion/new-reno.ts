import type { CongestionController } from './controller.js';

/**
 * NewReno as RFC 9002 section 7 describes it for QUIC: slow start, congestion avoidance,
 * one window reduction per round trip of losses (a recovery period that starts at the
 * first loss and ends when a packet sent after it is acknowledged).
 */
export class NewReno implements CongestionController {
  window: number;
  private ssthresh = Infinity;
  private recoveryStart = -Infinity;
  private minWindow: number;

  constructor(private maxDatagram: number) {
    // RFC 9002 7.2: initial window min(10 * max_datagram, max(14720, 2 * max_datagram)).
    this.window = Math.min(10 * maxDatagram, Math.max(14720, 2 * maxDatagram));
    this.minWindow = 2 * maxDatagram;
  }

  onSent(): void {}

  setMaxDatagram(bytes: number): void {
    this.maxDatagram = bytes;
    this.minWindow = 2 * bytes;
    if (this.window < this.minWindow) this.window = this.minWindow;
  }

  onAck(bytes: number, sentAt: number): void {
    if (sentAt <= this.recoveryStart) return;
    if (this.window < this.ssthresh) this.window += bytes;
    else this.window += (this.maxDatagram * bytes) / this.window;
  }

  onLoss(_bytes: number, sentAt: number, now: number): void {
    if (sentAt <= this.recoveryStart) return;
    this.recoveryStart = now;
    this.ssthresh = Math.max(this.window / 2, this.minWindow);
    this.window = this.ssthresh;
  }

  onPersistentCongestion(): void {
    this.window = this.minWindow;
  }

  toJSON(): Record<string, number | string> {
    return {
      algorithm: 'newreno',
      windowBytes: Math.round(this.window),
      ssthresh: this.ssthresh === Infinity ? -1 : Math.round(this.ssthresh),
    };
  }
}
