"""The reply-queue pattern: another service binds its own durable queue to Offload's
`offload.events` topic exchange and receives job events, with no HTTP and no polling.

    pip install kombu
    python examples/reply_consumer.py amqp://guest:guest@127.0.0.1:5672// \
        --queue billing.job-results --binding 'job.report.*' --binding 'job.*.failed'

Routing keys are `job.<kind>.<status>` (a kind may contain dots, e.g. `job.demo.sleep.succeeded`,
so bind `job.#` for everything or `job.#.succeeded` for all completions). The body is the
event: `{job_id, kind, status, version, progress, result|error, at, owner_id}`. The queue is
durable, so events published while this service is down wait for it. Events are
best-effort (published after commit, without confirms): use the job's `version` to drop
duplicates or stale news, and read `GET /api/v1/jobs/{id}` when in doubt.
"""

import argparse
import json
import sys

import kombu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("broker_url")
    parser.add_argument("--queue", default="example.job-events")
    parser.add_argument("--binding", action="append", help="routing key pattern (repeatable)")
    parser.add_argument("--max", type=int, default=0, help="stop after this many events")
    parser.add_argument("--timeout", type=float, default=0, help="stop after idle seconds")
    args = parser.parse_args()

    exchange = kombu.Exchange("offload.events", type="topic", durable=True)
    bindings = [kombu.binding(exchange, routing_key=key) for key in args.binding or ["job.#"]]
    queue = kombu.Queue(args.queue, bindings=bindings, durable=True)
    seen: dict[str, int] = {}
    received = 0

    def on_event(body: dict, message: kombu.Message) -> None:
        nonlocal received
        if body["version"] > seen.get(body["job_id"], 0):  # drop duplicates and stale news
            seen[body["job_id"]] = body["version"]
            print(message.delivery_info["routing_key"], json.dumps(body), flush=True)
        message.ack()
        received += 1

    with (
        kombu.Connection(args.broker_url) as connection,
        connection.Consumer(queue, callbacks=[on_event], accept=["json"]),
    ):
        print(f"listening on {args.queue}", file=sys.stderr, flush=True)
        while not args.max or received < args.max:
            try:
                connection.drain_events(timeout=args.timeout or None)
            except TimeoutError:
                break


if __name__ == "__main__":
    main()
