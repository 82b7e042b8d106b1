"""The fixed setup of the delivery benchmark: cores, credentials, names, targets."""

from __future__ import annotations

SERVER_CORE = "0"
OTHER_CORE = "1"
SECRET = "paysim-bench-secret"
BENCH_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",  # moto accepts anything; never real keys
    "AWS_SESSION_TOKEN": "bench",
}
REGION = "ap-northeast-2"
BUS_NAME = "paysim-bench-events"
EVENT_SOURCE = "paysim-bench"
INTENT_TTL_MS = 900_000
RECEIVER_PATH = "/webhooks"
RECEIVER_MAX_LIFETIME_S = 3 * 3600.0
TARGET_RATE = 2000.0  # issue 18: 2,000 payments/s on one core
TARGET_P99_S = 0.250
FOREIGN_LOAD_WARNING = 0.10  # share of a core used by other processes
