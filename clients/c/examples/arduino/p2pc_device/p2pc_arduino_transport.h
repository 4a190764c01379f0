// p2pc transport over any Arduino Client (WiFiClient, EthernetClient, GSM clients...): the porting layer of
// the p2pc library for Arduino cores. Header-only; the Client object must outlive the p2pc client.
#ifndef P2PC_ARDUINO_TRANSPORT_H
#define P2PC_ARDUINO_TRANSPORT_H

#include <Arduino.h>
#include <Client.h>
#include <p2pc.h>

#if defined(ESP32)
#include <esp_random.h>
#endif

static int p2pc_ard_open(void *ctx, const char *host, uint16_t port, uint32_t timeout_ms) {
  Client *net = static_cast<Client *>(ctx);
  net->stop();
  net->setTimeout(timeout_ms);  // Stream timeout: bounds the blocking calls of most cores
  return net->connect(host, port) == 1 ? 0 : -1;
}

static int p2pc_ard_write(void *ctx, const uint8_t *buf, size_t len, uint32_t timeout_ms) {
  Client *net = static_cast<Client *>(ctx);
  (void)timeout_ms;
  if (!net->connected()) return -1;
  size_t n = net->write(buf, len);
  return n > 0 ? (int)n : -1;
}

static int p2pc_ard_read(void *ctx, uint8_t *buf, size_t cap, uint32_t timeout_ms) {
  Client *net = static_cast<Client *>(ctx);
  uint32_t t0 = millis();
  // Buffered bytes first: many cores report "not connected" while unread data remains.
  while (net->available() <= 0) {
    if (!net->connected()) return -1;
    if (millis() - t0 >= timeout_ms) return 0;
    delay(1);  // lets the network stack (and the watchdog) run
  }
  int n = net->read(buf, cap);
  return n > 0 ? n : 0;
}

static void p2pc_ard_close(void *ctx) {
  static_cast<Client *>(ctx)->stop();
}

static uint32_t p2pc_ard_now(void *ctx) {
  (void)ctx;
  return millis();
}

static void p2pc_ard_sleep(void *ctx, uint32_t ms) {
  (void)ctx;
  delay(ms);
}

static int p2pc_ard_random(void *ctx, uint8_t *buf, size_t len) {
  (void)ctx;
#if defined(ESP32)
  esp_fill_random(buf, len);  // hardware RNG (true random with the radio on)
#elif defined(ESP8266)
  while (len--) *buf++ = (uint8_t)RANDOM_REG32;
#else
  // No hardware RNG known for this core: good enough for backoff jitter, NOT for secure-session nonces.
  // Replace with your MCU's TRNG before using STCP/DSTCP/HSTCP on it.
  while (len--) *buf++ = (uint8_t)random(256);
#endif
  return 0;
}

// Fills io for the p2pc client over `net`.
static inline void p2pc_arduino_transport(Client &net, p2pc_transport *io) {
  io->ctx = &net;
  io->open = p2pc_ard_open;
  io->write = p2pc_ard_write;
  io->read = p2pc_ard_read;
  io->close = p2pc_ard_close;
  io->now_ms = p2pc_ard_now;
  io->sleep_ms = p2pc_ard_sleep;
  io->random = p2pc_ard_random;
}

#endif  // P2PC_ARDUINO_TRANSPORT_H
