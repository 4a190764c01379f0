// The server's Prometheus text (/metrics) as numbers, for tests that count.

import type { TestServer } from './server.ts';

/** Every `p2pc_` series of a /metrics text, by its name with labels (`p2pc_delivered_total{target="RID"}`). */
export function parseMetrics(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const l of text.split('\n')) {
    if (!l.startsWith('p2pc_')) continue;
    const at = l.lastIndexOf(' ');
    m.set(l.slice(0, at), Number(l.slice(at + 1)));
  }
  return m;
}

/** One series of a /metrics text; throws when it is missing. */
export function metricOf(text: string, series: string): number {
  const v = parseMetrics(text).get(series);
  if (v === undefined) throw new Error(`no series ${series}`);
  return v;
}

/** Scrapes the server's /metrics. */
export async function scrapeMetrics(s: TestServer): Promise<Map<string, number>> {
  return parseMetrics(await (await fetch(`http://127.0.0.1:${s.httpPort}/metrics`)).text());
}

/** One series of the server's /metrics; throws when it is missing. */
export async function metric(s: TestServer, series: string): Promise<number> {
  return metricOf(await (await fetch(`http://127.0.0.1:${s.httpPort}/metrics`)).text(), series);
}
