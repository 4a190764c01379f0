// Message rates as a line chart on a canvas: sent and received per second over the last minute.

const POINTS = 60;

export class RateChart {
  private readonly canvas: HTMLCanvasElement;
  private readonly sent: number[] = [];
  private readonly received: number[] = [];
  private last = new Map<string, { sent: number; received: number }>();
  private lastT = 0;

  constructor(canvas: HTMLCanvasElement) {
    this.canvas = canvas;
  }

  /** Adds a sample from per-device counters (devices that left drop out; their old counts are not rates). */
  sample(t: number, devices: readonly { id: string; online: boolean; sent: number; received: number }[]): void {
    const next = new Map<string, { sent: number; received: number }>();
    let ds = 0;
    let dr = 0;
    for (const d of devices) {
      if (!d.online) continue;
      next.set(d.id, { sent: d.sent, received: d.received });
      const prev = this.last.get(d.id);
      if (prev !== undefined) {
        ds += Math.max(0, d.sent - prev.sent);
        dr += Math.max(0, d.received - prev.received);
      }
    }
    this.last = next;
    const dt = this.lastT === 0 ? 0 : (t - this.lastT) / 1000;
    this.lastT = t;
    if (dt <= 0) return;
    this.push(this.sent, ds / dt);
    this.push(this.received, dr / dt);
    this.draw();
  }

  private push(series: number[], v: number): void {
    series.push(v);
    if (series.length > POINTS) series.shift();
  }

  private draw(): void {
    const ctx = this.canvas.getContext('2d');
    if (ctx === null) return;
    const { width: w, height: h } = this.canvas;
    ctx.clearRect(0, 0, w, h);
    const max = Math.max(1, ...this.sent, ...this.received);
    ctx.fillStyle = '#5a6570';
    ctx.font = '11px system-ui';
    ctx.fillText(`${Math.round(max)}/s`, 4, 12);
    ctx.strokeStyle = '#d5dbe1';
    ctx.beginPath();
    ctx.moveTo(0, h - 0.5);
    ctx.lineTo(w, h - 0.5);
    ctx.stroke();
    const line = (series: number[], color: string): void => {
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      series.forEach((v, i) => {
        const x = (w * (i + POINTS - series.length)) / (POINTS - 1);
        const y = h - 2 - ((h - 18) * v) / max;
        if (i === 0) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
      });
      ctx.stroke();
    };
    line(this.sent, '#2b6cb0');
    line(this.received, '#1f9d55');
  }
}
