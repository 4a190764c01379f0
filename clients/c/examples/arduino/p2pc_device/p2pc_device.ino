// P2Pcluster device on an ESP32 (any Arduino core with a Client works the same): registers as LAMP over an
// HSTCP session, switches the built-in LED on "on"/"off" pushes, reports to its parent in the tree every
// minute, and watches its HUB. Reconnects by itself (WiFi drops, server restarts). No heap: the client and
// its two buffers are static.
#include <WiFi.h>
#include <p2pc.h>

#include "p2pc_arduino_transport.h"

#define WIFI_SSID "my-network"
#define WIFI_PASS "my-password"
#define P2PC_HOST "relay.example.com"
#define P2PC_PORT 8080
#define P2PC_KEY "0123456789ABCDEF0123456789ABCDEF"  // the account KEY
#define P2PC_UID "me@example.com"                    // the account e-mail (for HSTCP)
#define DEVICE_ID "LAMP"

#ifndef LED_BUILTIN
#define LED_BUILTIN 2
#endif

static WiFiClient net;
static p2pc_client client;
static uint8_t rx_buf[256];  // longest line received: 254 bytes
static uint8_t tx_buf[256];  // longest command sent

static void on_event(p2pc_client *c, const p2pc_event *ev, void *user) {
  (void)user;
  switch (ev->type) {
    case P2PC_EV_PUSH:
      Serial.print("push: ");
      Serial.write((const uint8_t *)ev->data, ev->len);
      Serial.println();
      if (ev->len == 2 && memcmp(ev->data, "on", 2) == 0) digitalWrite(LED_BUILTIN, HIGH);
      if (ev->len == 3 && memcmp(ev->data, "off", 3) == 0) digitalWrite(LED_BUILTIN, LOW);
      break;
    case P2PC_EV_PRESENCE:
      Serial.printf("%.*s is %s\n", (int)ev->id_len, ev->id, ev->online ? "online" : "offline");
      break;
    case P2PC_EV_CONNECTED:
      // Watches and wills live as long as a connection: set them on every (re)connection.
      Serial.println("connected");
      p2pc_watch(c, "RID:HUB", 1);
      p2pc_will(c, "PARENT", DEVICE_ID " lost");
      break;
    case P2PC_EV_DISCONNECTED:
      Serial.printf("disconnected (%s), reconnecting\n", p2pc_err_name(ev->error));
      break;
    default:
      break;
  }
}

void setup() {
  Serial.begin(115200);
  pinMode(LED_BUILTIN, OUTPUT);
  WiFi.begin(WIFI_SSID, WIFI_PASS);
  while (WiFi.status() != WL_CONNECTED) delay(200);

  p2pc_transport io;
  p2pc_arduino_transport(net, &io);
  p2pc_config cfg;
  p2pc_config_defaults(&cfg);
  cfg.host = P2PC_HOST;
  cfg.port = P2PC_PORT;
  cfg.key = P2PC_KEY;
  cfg.uid = P2PC_UID;
  cfg.secure = P2PC_SECURE_HSTCP;
  cfg.keepalive_ms = 120000;  // notice a dead link within ~2 minutes even when nothing is pushed
  cfg.rx_buf = rx_buf;
  cfg.rx_size = sizeof rx_buf;
  cfg.tx_buf = tx_buf;
  cfg.tx_size = sizeof tx_buf;
  cfg.on_event = on_event;
  if (p2pc_init(&client, &cfg, &io) != P2PC_OK) {
    Serial.println("bad p2pc configuration");
    for (;;) delay(1000);
  }
  int r = p2pc_register(&client, DEVICE_ID);  // on failure, p2pc_poll keeps retrying with backoff
  Serial.printf("register: %s\n", p2pc_err_name(r));
}

void loop() {
  static uint32_t last_report;
  p2pc_poll(&client, 50);
  if (p2pc_get_state(&client) == P2PC_STATE_READY && millis() - last_report >= 60000) {
    char msg[32];
    last_report = millis();
    int n = snprintf(msg, sizeof msg, "uptime %lu", (unsigned long)(millis() / 1000));
    int r = p2pc_push(&client, P2PC_PARENT, NULL, msg, (size_t)n, NULL);
    if (r != P2PC_OK) Serial.printf("report: %s\n", p2pc_err_name(r));
  }
}
