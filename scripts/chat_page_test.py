#!/usr/bin/env python3
"""The chat page of `rmlx serve` in headless Chromium (Selenium + chromedriver). Given a server
that requires an API key (scripts/chat_page_test.sh starts one with the real SmolLM2 model on the
CPU), load `/`, enter the key (the page must ask for it), set temperature 0, send a message, and
check that

  * the answer is rendered while it streams (a DOM observer sees partial text before the end),
  * the final text equals the server's own non-streamed greedy answer to the same messages,
  * the stop button aborts a running answer and the page can send again,
  * the key survives a reload (localStorage), and
  * the browser console has no errors but the expected 401 of the keyless first load.

Run by scripts/chat_page_test.sh, which installs Chromium and Selenium and starts the server.

    python scripts/chat_page_test.py http://127.0.0.1:PORT API_KEY
"""
import json
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

MAX_TOKENS = 24
TIMEOUT = 300  # seconds for one answer: CI runs a debug build on 2 cores


def reference(base, key, messages):
    """The server's non-streamed greedy answer."""
    body = json.dumps({"messages": messages, "temperature": 0, "max_tokens": MAX_TOKENS}).encode()
    req = urllib.request.Request(base + "/v1/chat/completions", body, {
        "Content-Type": "application/json", "Authorization": "Bearer " + key})
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        return json.load(r)["choices"][0]["message"]["content"]


def browser():
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1000,800"):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=o, service=Service("/usr/bin/chromedriver"))


# Records the text length of the newest answer at every DOM change, with the page's own clock.
OBSERVE = """
window.__lens = [];
new MutationObserver(() => {
  const a = document.querySelectorAll('.assistant');
  if (a.length) window.__lens.push(a[a.length - 1].textContent.length);
}).observe(document.getElementById('log'), {childList: true, subtree: true, characterData: true});
"""


def text_of(d, css):
    return d.execute_script(f"return document.querySelector({css!r}).textContent")


def send(d, message):
    box = d.find_element(By.ID, "input")
    box.send_keys(message)
    d.find_element(By.ID, "send").click()


def wait_answer(d, n):
    """Waits for the n-th answer (1-based) to finish; returns its element's finish reason."""
    sel = f".assistant:nth-of-type({n})"
    WebDriverWait(d, TIMEOUT).until(
        lambda d: d.execute_script(
            "const a = document.querySelectorAll('.assistant');"
            "return a.length >= arguments[0] && a[arguments[0] - 1].dataset.finish;", n))
    return sel


def main():
    base, key = sys.argv[1], sys.argv[2]
    d = None
    try:
        d = browser()
        d.get(base + "/")
        # Without a key the page loads but says it needs one.
        WebDriverWait(d, 30).until(lambda d: "API key" in text_of(d, "#error"))
        d.find_element(By.TAG_NAME, "summary").click()
        d.find_element(By.ID, "key").send_keys(key)
        d.find_element(By.ID, "temp").send_keys("0")
        d.find_element(By.ID, "max").send_keys(str(MAX_TOKENS))
        d.find_element(By.ID, "system").click()  # leaving the key field commits it ("change")
        WebDriverWait(d, 30).until(lambda d: text_of(d, "#model").endswith(".gguf"))
        assert text_of(d, "#error") == "", text_of(d, "#error")

        d.execute_script(OBSERVE)
        question = "What is the capital of France?"
        send(d, question)
        wait_answer(d, 1)
        answer = d.execute_script("return document.querySelector('.assistant').textContent")
        finish = d.execute_script("return document.querySelector('.assistant').dataset.finish")
        lens = d.execute_script("return window.__lens")
        assert text_of(d, "#error") == "", text_of(d, "#error")
        assert finish in ("stop", "length"), finish
        assert answer, "the answer is empty"
        partial = sorted({n for n in lens if 0 < n < len(answer)})
        assert partial, f"no partial render before the end (lengths seen: {lens})"
        expected = reference(base, key, [{"role": "user", "content": question}])
        assert answer == expected, f"page {answer!r} != non-streamed {expected!r}"
        print(f"streamed answer ({finish}, {len(partial)} partial renders before its "
              f"{len(answer)} characters) equals the non-streamed one: {answer!r}")

        # A second turn carries the conversation; stop it once text has arrived.
        d.execute_script("document.getElementById('max').value = '400'")
        send(d, "Tell me a long story about it.")
        WebDriverWait(d, TIMEOUT).until(lambda d: d.execute_script(
            "const a = document.querySelectorAll('.assistant');"
            "return a.length == 2 && a[1].textContent.length > 0"))
        d.find_element(By.ID, "stop").click()
        wait_answer(d, 2)
        finish2 = d.execute_script(
            "return document.querySelectorAll('.assistant')[1].dataset.finish")
        assert finish2 == "stopped", finish2
        assert d.find_element(By.ID, "send").is_displayed(), "send is not back after stop"
        assert text_of(d, "#error") == "", text_of(d, "#error")
        # The server cancels the aborted request (its stream is dropped).
        deadline = time.time() + 30
        while True:
            with urllib.request.urlopen(base + "/health", timeout=10) as r:
                h = json.load(r)
            if h["running"] == 0 and h["cancelled"] >= 1:
                break
            assert time.time() < deadline, f"the stopped request still runs: {h}"
            time.sleep(0.2)
        print("stop aborts the stream and the server cancels the request")

        # The key is remembered across a reload.
        errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        d.get(base + "/")
        WebDriverWait(d, 30).until(lambda d: text_of(d, "#model").endswith(".gguf"))
        assert d.find_element(By.ID, "key").get_attribute("value") == key

        errors += [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        unexpected = [e for e in errors
                      if not ("/v1/models" in e["message"] and " 401 " in e["message"])]
        assert not unexpected, f"console errors: {unexpected}"
        assert len(errors) <= 1, errors
        print(f"chat page: all checks passed against {base} "
              f"({d.capabilities.get('browserVersion', '?')})")
    finally:
        if d is not None:
            d.quit()


if __name__ == "__main__":
    main()
