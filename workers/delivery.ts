// piscina worker entry for outbox deliveries (src/services/delivery.ts).
export { default } from '../src/services/delivery.ts';
