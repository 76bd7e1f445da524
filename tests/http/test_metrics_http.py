"""`/metrics` on a client and a provider, read with prometheus-client's own parser after a job:
jobs by state, latencies, tokens, warm workers, peers and adverts, chain calls, wei."""

from __future__ import annotations

import httpx
import openai
from http_devnet import HttpDevnet
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_can_watch_jobs_and_the_market_in_prometheus(http_devnet: HttpDevnet) -> None:
    before = scrape(http_devnet.client_url)
    client = openai.OpenAI(base_url=f"{http_devnet.client_url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model=http_devnet.generation_model_id,
        messages=[{"role": "user", "content": "Count"}],
        max_tokens=8,
        stream=True,
    )
    assert [chunk for chunk in stream]
    after = scrape(http_devnet.client_url)

    verified = value(after, "gpunode_jobs_total", role="client", state="verified")
    assert verified == value(before, "gpunode_jobs_total", role="client", state="verified") + 1
    assert value(after, "gpunode_job_attempts_total", outcome="completed") >= 1
    assert value(after, "gpunode_job_end_to_end_seconds_count") >= 1
    assert value(after, "gpunode_time_to_first_token_seconds_count") > value(
        before, "gpunode_time_to_first_token_seconds_count"
    )
    assert value(after, "gpunode_tokens_generated_total") > value(before, "gpunode_tokens_generated_total")
    assert value(after, "gpunode_payments_wei_total") > value(before, "gpunode_payments_wei_total")
    assert value(after, "gpunode_vouchers_promised_wei") > 0
    assert value(after, "gpunode_deposit_wei") > 0
    assert value(after, "gpunode_peers_connected") >= 1
    assert value(after, "gpunode_adverts_live") == 1
    assert value(after, "gpunode_adverts_accepted_total") >= 1
    assert value(after, "gpunode_chain_calls_total") > 0
    assert ("gpunode_gossip_dropped_total", ()) in after
    assert value(after, "gpunode_http_requests_total", route="/v1/chat/completions", status="200") >= 1

    provider = scrape(http_devnet.provider_url)
    assert value(provider, "gpunode_warm_workers", model=http_devnet.generation_model_id) >= 1
    assert value(provider, "gpunode_warm_workers", model=http_devnet.embedding_model_id) >= 1
    assert value(provider, "gpunode_job_queue_seconds_count") >= 1
    assert value(provider, "gpunode_job_execution_seconds_count") >= 1
    assert value(provider, "gpunode_jobs_total", role="provider", state="signed") >= 1
    assert value(provider, "gpunode_stake_wei") > 0
    assert value(provider, "gpunode_provider_wei", standing="unredeemed_voucher") > 0
