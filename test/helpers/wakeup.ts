// Waiting on a test client's incoming bytes: `until` re-checks a condition each time data (or a close) arrives, up to
// a deadline, with no polling.

export class Wakeup {
  private waiters: (() => void)[] = [];

  /** Something arrived: every waiter checks its condition again. */
  wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves once `pred()` holds; past `ms`, rejects with `failure()` as the message. */
  async until(pred: () => boolean, ms: number, failure: () => string): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(failure());
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}
