// Mesh routers drawn as a graph: each router a hub, its members around it, coloured online/offline.
// Clicking a member removes it from that router (after a confirmation).

import { el } from './tree.ts';

const R = 70;
const CELL = 200;

export class RouterView {
  private readonly svg: SVGSVGElement;
  private readonly remove: (router: string, id: string) => void;
  private routers: { name: string; members: string[] }[] = [];
  private online = new Set<string>();

  constructor(svg: SVGSVGElement, remove: (router: string, id: string) => void) {
    this.svg = svg;
    this.remove = remove;
  }

  setRouters(routers: { name: string; members: string[] }[]): void {
    this.routers = routers;
    this.render();
  }

  setOnline(online: Set<string>): void {
    this.online = online;
    this.render();
  }

  private render(): void {
    const svg = this.svg;
    svg.replaceChildren();
    const cols = Math.max(1, Math.min(3, this.routers.length));
    const rows = Math.max(1, Math.ceil(this.routers.length / cols));
    svg.setAttribute('viewBox', `0 0 ${cols * CELL} ${rows * CELL}`);
    svg.style.height = `${rows * CELL}px`;
    svg.style.maxWidth = `${cols * CELL}px`;
    if (this.routers.length === 0) {
      const t = el('text', { x: 8, y: 30, fill: '#5a6570' }, svg);
      t.textContent = 'No routers yet.';
    }
    this.routers.forEach((r, i) => {
      const cx = (i % cols) * CELL + CELL / 2;
      const cy = Math.floor(i / cols) * CELL + CELL / 2;
      const n = r.members.length;
      r.members.forEach((m, k) => {
        const a = (2 * Math.PI * k) / Math.max(1, n) - Math.PI / 2;
        const x = cx + R * Math.cos(a);
        const y = cy + R * Math.sin(a);
        el('line', { class: 'edge', x1: cx, y1: cy, x2: x, y2: y }, svg);
        const g = el(
          'g',
          { class: `member ${this.online.has(m) ? 'online' : 'offline'}`, 'data-router': r.name, 'data-id': m },
          svg,
        );
        el('circle', { cx: x, cy: y, r: 9 }, g);
        const t = el('text', { class: 'outside', x, y: y + 22, 'text-anchor': 'middle' }, g);
        t.textContent = m;
        const title = el('title', {}, g);
        title.textContent = `${m} in ${r.name}: click to remove`;
        g.style.cursor = 'pointer';
        g.addEventListener('click', () => {
          if (confirm(`Remove ${m} from router ${r.name}?`)) this.remove(r.name, m);
        });
      });
      const hub = el('g', { class: 'hub', 'data-router': r.name }, svg);
      el('circle', { cx, cy, r: 24 }, hub);
      const t = el('text', { x: cx, y: cy + 4, 'text-anchor': 'middle' }, hub);
      t.textContent = r.name.length > 7 ? `${r.name.slice(0, 6)}…` : r.name;
    });
  }
}
