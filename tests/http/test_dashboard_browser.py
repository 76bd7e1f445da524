"""The dashboard in a real headless browser (Debian's chromium through chromedriver and Selenium):
it loads with no console errors, shows a job the test submits while it streams, and updates when
the job finishes. Screenshots are kept in the test's directory (their paths are printed)."""

from __future__ import annotations

import queue
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from http_devnet import HttpDevnet
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMEDRIVER is None, reason="needs Debian's chromium and chromium-driver (scripts/dev.sh installs them)"
)
FINISHED = ("verified", "settled")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: webdriver.Chrome) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def keep(driver: webdriver.Chrome, path: Path) -> None:
    assert driver.save_screenshot(str(path))
    print(f"screenshot: {path}")


def stream_a_chat(devnet: HttpDevnet, job_ids: queue.Queue[str]) -> None:
    body = {
        "model": devnet.generation_model_id,
        "messages": [{"role": "user", "content": "Tell me about GPUs"}],
        "max_tokens": 48,
        "stream": True,
    }
    with httpx.stream("POST", f"{devnet.client_url}/v1/chat/completions", json=body, timeout=120) as response:
        job_ids.put(response.headers["x-gpunode-job-id"])
        for _ in response.iter_lines():
            pass


def test_can_follow_a_job_on_the_client_dashboard(
    http_devnet: HttpDevnet, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    browser.get(http_devnet.client_url + "/")
    wait = WebDriverWait(browser, 60, poll_frequency=0.1)
    wait.until(lambda d: d.find_element(By.ID, "node").text.startswith("0x"))
    assert browser.find_element(By.ID, "role").text == "client"
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#providers tr"))
    provider_row = browser.find_element(By.CSS_SELECTOR, "#providers tr").text
    assert http_devnet.provider_address[:10] in provider_row
    assert "ETH" in provider_row  # its price

    job_ids: queue.Queue[str] = queue.Queue()
    streaming = threading.Thread(target=stream_a_chat, args=(http_devnet, job_ids), daemon=True)
    streaming.start()
    job_id = job_ids.get(timeout=120)
    row = f"job-{job_id}"
    wait.until(lambda d: d.find_elements(By.ID, row))
    first_state = browser.find_element(By.ID, row).get_attribute("data-state")
    keep(browser, tmp_path / "dashboard-job-running.png")
    streaming.join(120)
    wait.until(lambda d: d.find_element(By.ID, row).get_attribute("data-state") in FINISHED)
    assert (
        browser.find_element(By.ID, row).get_attribute("data-state") != first_state or first_state in FINISHED
    )
    assert browser.find_element(By.ID, "deposit").text.endswith("ETH")
    keep(browser, tmp_path / "dashboard-job-finished.png")
    assert console_errors(browser) == []


def test_can_see_a_provider_on_its_dashboard(
    http_devnet: HttpDevnet, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    browser.get(http_devnet.provider_url + "/")
    wait = WebDriverWait(browser, 60, poll_frequency=0.1)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#models tr"))
    assert browser.find_element(By.ID, "role").text == "provider"
    cards = browser.find_element(By.ID, "provider-cards").text
    assert "stake" in cards
    assert "1 ETH" in cards  # the devnet's stake
    models = browser.find_element(By.ID, "models").text
    assert http_devnet.generation_model_id[:10] in models
    keep(browser, tmp_path / "dashboard-provider.png")
    assert console_errors(browser) == []


def test_can_open_an_exposed_dashboard_with_its_token(
    http_devnet: HttpDevnet, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    browser.get(http_devnet.pauper_url + "/")
    wait = WebDriverWait(browser, 30, poll_frequency=0.1)
    wait.until(lambda d: d.find_element(By.ID, "error").text)
    assert "bearer token" in browser.find_element(By.ID, "error").text
    browser.get(f"{http_devnet.pauper_url}/#token={http_devnet.pauper_token}")
    browser.refresh()
    wait.until(lambda d: d.find_element(By.ID, "node").text.startswith("0x"))
    keep(browser, tmp_path / "dashboard-with-token.png")
