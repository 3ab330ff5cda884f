"""The pages in a real browser (Debian's headless Chromium through Selenium and
chromedriver), against a real local cluster: the customer opens their record with a key
file, an agent reads their profile and the customer sees that read, the customer revokes a
consent and the revoke commits on the chain, and the operator view shows three nodes and a
new leader once the leader stops. Screenshots of each page go to artifacts/screenshots/."""
from __future__ import annotations

from pathlib import Path

import pytest

from crmledger.client import Client
from crmledger.ledger.keys import SigningKey
from tests.cluster_kit import ROOT, Cluster, wait_for

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SHOTS = ROOT / "artifacts" / "screenshots"
PROFILE = {"name": "Alice Liddell", "email": "alice@example.org", "phone": "+44 20 7946 0000"}


@pytest.fixture
def browser(tmp_path):
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.fail("Debian's chromium and chromium-driver are needed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1100,1400"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.implicitly_wait(0)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, cond, what: str, timeout: float = 20.0):
    try:
        return wait_for(lambda: cond(), timeout, what)
    except TimeoutError:
        logs = driver.get_log("browser")
        status = driver.execute_script("const s = document.getElementById('status'); return s && s.textContent")
        raise AssertionError(f"timed out waiting for {what}; status line: {status!r}; console: {logs}") from None


def _text(driver, css: str) -> str:
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : ''", css)


def _labelled(driver) -> list[str]:
    """Form controls without a label (there should be none)."""
    return driver.execute_script("""return [...document.querySelectorAll('input, select, textarea')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.id)""")


def _shot(driver, name: str) -> None:
    """The whole page, as tall as it is."""
    width = driver.get_window_size()["width"]
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(height + 140, 5000))
    driver.save_screenshot(str(SHOTS / name))


def _sign_in(driver, key_file: Path, cid: str) -> None:
    driver.find_element("id", "keyfile").send_keys(str(key_file))
    driver.find_element("id", "cid").clear()
    driver.find_element("id", "cid").send_keys(cid)
    driver.find_element("id", "open").click()


def test_the_pages_in_a_real_browser(tmp_path, browser):
    c = Cluster(tmp_path)
    d = browser
    alice = SigningKey.generate()
    alice_pem = tmp_path / "alice.pem"
    alice_pem.write_bytes(alice.to_pem())
    try:
        c.start_all()
        with Client([c.url(1)], key=c.org_keys[1], org="org1") as org1, Client([c.url(1)], key=alice) as me:
            assert org1.register_customer("alice", PROFILE, customer_key=alice.public_hex)["valid"]
            assert me.grant_consent("alice", "org2", ["email"], "dpv:CustomerCare")["valid"]
            assert org1.open_ticket("t1", "alice", "phone", "My card was charged twice")["valid"]
            assert org1.update_ticket("t1", "resolved", "Refunded the second charge")["valid"]

        # the customer portal: errors in words, then the record
        d.get(c.url(1, "/ui/portal.html"))
        assert not _labelled(d)
        assert d.execute_script("return window.isSecureContext") is True
        _sign_in(d, alice_pem, "nobody")
        _wait(d, lambda: "no such customer" in _text(d, "#status"), "the error in words")
        _sign_in(d, alice_pem, "alice")
        _wait(d, lambda: _text(d, "#consents [data-org=org2]") == "active", "the consent to org2")
        assert "alice@example.org" in _text(d, "#profile")
        assert "Refunded the second charge" in _text(d, "#tickets")

        # the agent console of org2 reads her e-mail address for customer care
        d.get(c.url(2, "/ui/agent.html"))
        assert not _labelled(d)
        d.find_element("id", "keyfile").send_keys(str(c.dir / "keys" / "org2.pem"))
        d.find_element("css selector", "#org option[value=org2]").click()
        d.find_element("id", "signin").click()
        _wait(d, lambda: "Signed in for org2" in _text(d, "#status"), "the agent to sign in")
        d.find_element("id", "r-cid").send_keys("alice")
        d.find_element("id", "r-fields").send_keys("email")
        d.find_element("id", "read").click()
        _wait(d, lambda: "Access entry" in _text(d, "#access-entry"), "the read to be on the chain")
        assert "alice@example.org" in _text(d, "#read-out")
        _shot(d, "agent.png")

        # back in the portal: the read is listed; she revokes the consent, on the chain
        d.get(c.url(1, "/ui/portal.html"))
        _sign_in(d, alice_pem, "alice")
        _wait(d, lambda: "org2" in _text(d, "#access") and "read" in _text(d, "#access"), "the access entry")
        _shot(d, "portal.png")
        d.find_element("css selector", "button[aria-label='Revoke consent for org2']").click()
        _wait(d, lambda: _text(d, "#consents [data-org=org2]") == "revoked", "the revoke")
        states = {x["grantee_org"]: x["state"] for x in c.get(3, "/v1/customers/alice/consents")["consents"]}
        assert states == {"org2": "revoked"}
        d.set_window_size(390, 844)   # a phone: nothing wider than the screen
        d.refresh()
        _sign_in(d, alice_pem, "alice")
        _wait(d, lambda: _text(d, "#consents [data-org=org2]") == "revoked", "the portal on a phone")
        assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        _shot(d, "portal-phone.png")
        d.set_window_size(1100, 1400)

        # the operator view: three nodes, a leader, and a new one when it stops
        leader = c.leader()
        viewer = next(i for i in (1, 2, 3) if i != leader)
        d.get(c.url(viewer, "/ui/operator.html"))
        _wait(d, lambda: len(d.find_elements("css selector", "#nodes [data-role]")) == 3, "three nodes")
        _wait(d, lambda: _text(d, "#leader") == f"node{leader}", "the leader")
        _wait(d, lambda: "Show" in _text(d, "#blocks"), "the latest blocks")
        _shot(d, "operator.png")
        c.stop(leader)
        _wait(d, lambda: _text(d, "#leader") not in ("", f"node{leader}", "—")
              and "none" not in _text(d, "#leader"), "a new leader", 30)
        assert "unreachable" in _text(d, "#nodes")
        _shot(d, "operator-failover.png")
    finally:
        c.stop_all()


def test_the_readme_shows_the_pages():
    """The README shows docs/screenshots/, copies of a run's artifacts/screenshots/."""
    readme = (ROOT / "README.md").read_text()
    for name in ("portal.png", "agent.png", "operator.png"):
        assert f"docs/screenshots/{name}" in readme
        assert (ROOT / "docs" / "screenshots" / name).stat().st_size > 10_000
