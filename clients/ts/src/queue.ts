// Small data structures: a ring-buffer FIFO and a bounded async channel (the iterator behind messages()).

/** FIFO on a power-of-two ring: O(1) push/shift without Array#shift's copying. */
export class Deque<T> {
  private buf: (T | undefined)[];
  private head = 0;
  private mask: number;
  length = 0;

  constructor(capacity = 16) {
    let cap = 16;
    while (cap < capacity) cap *= 2;
    this.buf = new Array<T | undefined>(cap);
    this.mask = cap - 1;
  }

  push(v: T): void {
    if (this.length === this.buf.length) this.grow();
    this.buf[(this.head + this.length) & this.mask] = v;
    this.length++;
  }

  shift(): T | undefined {
    if (this.length === 0) return undefined;
    const v = this.buf[this.head];
    this.buf[this.head] = undefined;
    this.head = (this.head + 1) & this.mask;
    this.length--;
    return v;
  }

  peek(): T | undefined {
    return this.length === 0 ? undefined : this.buf[this.head];
  }

  /** Removes and returns everything, oldest first. */
  drain(): T[] {
    const out: T[] = [];
    for (let v = this.shift(); v !== undefined; v = this.shift()) out.push(v);
    return out;
  }

  private grow(): void {
    const old = this.buf;
    const next = new Array<T | undefined>(old.length * 2);
    for (let i = 0; i < this.length; i++) next[i] = old[(this.head + i) & this.mask];
    this.buf = next;
    this.head = 0;
    this.mask = next.length - 1;
  }
}

/**
 * An async-iterable queue with one producer (the client) and any number of consumers. It never drops: the producer
 * watches `length` (and `bytes`) and stops reading its socket while the consumers lag; `onTake` tells it when an
 * item was taken so it can resume.
 */
export class Channel<T> {
  private readonly items = new Deque<T>();
  private readonly waiters = new Deque<(r: IteratorResult<T>) => void>();
  private ended = false;
  /** Sum of the sizes given to put() of the items still queued. */
  bytes = 0;
  private readonly sizes = new Deque<number>();
  private readonly onTake: () => void;

  constructor(onTake: () => void) {
    this.onTake = onTake;
  }

  get length(): number {
    return this.items.length;
  }

  get closed(): boolean {
    return this.ended;
  }

  /** Hands v to a waiting consumer or queues it. */
  put(v: T, size = 0): void {
    if (this.ended) return;
    const w = this.waiters.shift();
    if (w !== undefined) {
      w({ value: v, done: false });
      return;
    }
    this.items.push(v);
    this.sizes.push(size);
    this.bytes += size;
  }

  /** No more items: consumers get what is queued, then `done`. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    for (let w = this.waiters.shift(); w !== undefined; w = this.waiters.shift()) w({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<T>> {
    if (this.items.length > 0) {
      const v = this.items.shift() as T;
      this.bytes -= this.sizes.shift() ?? 0;
      this.onTake();
      return Promise.resolve({ value: v, done: false });
    }
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Takes what is queued right now, without waiting. */
  takeAll(): T[] {
    const out = this.items.drain();
    this.sizes.drain();
    this.bytes = 0;
    if (out.length > 0) this.onTake();
    return out;
  }
}

/** An AsyncIterableIterator over a channel; `return()` (a `break` out of `for await`) runs `onReturn`. */
export class ChannelIterator<T> implements AsyncIterableIterator<T> {
  private readonly ch: Channel<T>;
  private readonly onReturn: () => void;
  private done = false;

  constructor(ch: Channel<T>, onReturn: () => void = () => {}) {
    this.ch = ch;
    this.onReturn = onReturn;
  }

  next(): Promise<IteratorResult<T>> {
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return this.ch.next();
  }

  return(): Promise<IteratorResult<T>> {
    if (!this.done) {
      this.done = true;
      this.onReturn();
    }
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}
