// The tree drawn as a hierarchy (SVG), devices coloured online/offline, and drag-to-move: drop a device on
// its new parent, or on the background to make it a root. Devices not in the tree sit in a tray below and
// can be dragged into it the same way.

const SVG = 'http://www.w3.org/2000/svg';
const W = 96;
const H = 26;
const GAP_X = 12;
const GAP_Y = 46;

export interface TreeActions {
  /** Move `id` (in the tree) under `parent` (null: make it a root). */
  move(id: string, parent: string | null): void;
  /** Put `id` (not in the tree yet) under `parent` (null: as a root). */
  place(id: string, parent: string | null): void;
}

export function el<K extends keyof SVGElementTagNameMap>(
  name: K,
  attrs: Record<string, string | number>,
  parent?: Element,
): SVGElementTagNameMap[K] {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  parent?.appendChild(e);
  return e;
}

/** x (centre) and depth of every node: leaves left to right in order, parents centred over their children. */
export function layout(
  nodes: readonly { id: string; parent: string | null }[],
): Map<string, { x: number; depth: number }> {
  const children = new Map<string | null, string[]>();
  for (const n of nodes) {
    const list = children.get(n.parent) ?? [];
    list.push(n.id);
    children.set(n.parent, list);
  }
  const out = new Map<string, { x: number; depth: number }>();
  let nextLeaf = 0;
  const place = (id: string, depth: number): number => {
    const kids = children.get(id) ?? [];
    let x: number;
    if (kids.length === 0) x = nextLeaf++ * (W + GAP_X) + W / 2;
    else {
      const xs = kids.map((k) => place(k, depth + 1));
      x = (xs[0]! + xs[xs.length - 1]!) / 2;
    }
    out.set(id, { x, depth });
    return x;
  };
  for (const root of children.get(null) ?? []) place(root, 0);
  return out;
}

export class TreeView {
  private readonly svg: SVGSVGElement;
  private readonly tray: HTMLElement;
  private readonly actions: TreeActions;
  private nodes: { id: string; parent: string | null }[] = [];
  private online = new Set<string>();
  private known: string[] = [];

  constructor(svg: SVGSVGElement, tray: HTMLElement, actions: TreeActions) {
    this.svg = svg;
    this.tray = tray;
    this.actions = actions;
  }

  setTopology(nodes: { id: string; parent: string | null }[]): void {
    this.nodes = nodes;
    this.render();
  }

  setDevices(devices: readonly { id: string; online: boolean }[]): void {
    const online = new Set(devices.filter((d) => d.online).map((d) => d.id));
    const known = devices.map((d) => d.id);
    if (sameSet(online, this.online) && known.join() === this.known.join()) return;
    this.online = online;
    this.known = known;
    this.render();
  }

  private render(): void {
    const svg = this.svg;
    svg.replaceChildren();
    const pos = layout(this.nodes);
    let maxX = W;
    let maxDepth = 0;
    for (const p of pos.values()) {
      maxX = Math.max(maxX, p.x + W / 2);
      maxDepth = Math.max(maxDepth, p.depth);
    }
    const height = this.nodes.length === 0 ? 60 : (maxDepth + 1) * (H + GAP_Y);
    svg.setAttribute('viewBox', `0 0 ${maxX + 8} ${height}`);
    svg.style.height = `${height}px`;
    svg.style.maxWidth = `${maxX + 8}px`;
    const y = (depth: number): number => 4 + depth * (H + GAP_Y);
    for (const n of this.nodes) {
      if (n.parent === null) continue;
      const a = pos.get(n.parent)!;
      const b = pos.get(n.id)!;
      el(
        'path',
        {
          class: 'edge',
          d: `M${a.x},${y(a.depth) + H} C${a.x},${y(a.depth) + H + GAP_Y / 2} ${b.x},${y(b.depth) - GAP_Y / 2} ${b.x},${y(b.depth)}`,
        },
        svg,
      );
    }
    if (this.nodes.length === 0) {
      const t = el('text', { x: 8, y: 30, fill: '#5a6570' }, svg);
      t.textContent = 'The tree is empty: drag a device here to make it a root.';
    }
    for (const n of this.nodes) {
      const p = pos.get(n.id)!;
      const g = el(
        'g',
        {
          class: `node ${this.online.has(n.id) ? 'online' : 'offline'}`,
          'data-id': n.id,
          transform: `translate(${p.x - W / 2},${y(p.depth)})`,
        },
        svg,
      );
      el('rect', { width: W, height: H, rx: 5 }, g);
      const t = el('text', { x: W / 2, y: H / 2 + 4, 'text-anchor': 'middle' }, g);
      t.textContent = n.id.length > 13 ? `${n.id.slice(0, 12)}…` : n.id;
      const title = el('title', {}, g);
      title.textContent = `${n.id} (${this.online.has(n.id) ? 'online' : 'offline'})`;
      g.addEventListener('pointerdown', (e) => this.drag(e, n.id, g, true));
    }
    const inTree = new Set(this.nodes.map((n) => n.id));
    this.tray.replaceChildren();
    for (const id of this.known) {
      if (inTree.has(id)) continue;
      const chip = document.createElement('span');
      chip.className = `chip ${this.online.has(id) ? 'online' : 'offline'}`;
      chip.dataset.id = id;
      chip.textContent = id;
      chip.addEventListener('pointerdown', (e) => this.drag(e, id, chip, false));
      this.tray.appendChild(chip);
    }
  }

  /** Follows one drag; on release, moves or places the device where it was dropped. */
  private drag(start: PointerEvent, id: string, source: Element, inTree: boolean): void {
    start.preventDefault();
    source.classList.add('dragging');
    let over: Element | null = null;
    let moved = false;
    const target = (e: PointerEvent): { node: Element | null; inSvg: boolean } => {
      const hit = document.elementFromPoint(e.clientX, e.clientY);
      const node = hit?.closest('.node') ?? null;
      return {
        node: node?.getAttribute('data-id') === id ? null : node,
        inSvg: hit !== null && this.svg.contains(hit),
      };
    };
    const onMove = (e: PointerEvent): void => {
      if (Math.abs(e.clientX - start.clientX) + Math.abs(e.clientY - start.clientY) > 6) moved = true;
      const { node } = target(e);
      if (node !== over) {
        over?.classList.remove('drop');
        node?.classList.add('drop');
        over = node;
      }
    };
    const onUp = (e: PointerEvent): void => {
      window.removeEventListener('pointermove', onMove);
      window.removeEventListener('pointerup', onUp);
      source.classList.remove('dragging');
      over?.classList.remove('drop');
      if (!moved) return;
      const { node, inSvg } = target(e);
      const parent = node?.getAttribute('data-id') ?? null;
      if (node === null && !inSvg) return; // dropped outside the tree: nothing
      if (inTree) this.actions.move(id, parent);
      else this.actions.place(id, parent);
    };
    window.addEventListener('pointermove', onMove);
    window.addEventListener('pointerup', onUp);
  }
}

function sameSet(a: Set<string>, b: Set<string>): boolean {
  if (a.size !== b.size) return false;
  for (const v of a) if (!b.has(v)) return false;
  return true;
}
