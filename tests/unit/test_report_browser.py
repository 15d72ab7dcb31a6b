"""The report in a real browser: Debian's Chromium, headless, offline, opens index.html next to
a copy broken on purpose (the positive control: a missing image, a script that logs an error, a
link to nowhere), both framed by a probe page whose script reads what each rendered."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from netns_lab.features.compliance import report
from netns_lab.features.compliance.report import sections
from tests.unit import report_docs as docs

CHROMIUM = shutil.which("chromium")
CONSOLE = re.compile(r':CONSOLE:\d+\] "(.*)", source: (\S+)')
PROBE = """<!DOCTYPE html><html><body>
<iframe id="good" src="r/index.html" width="1200" height="900"></iframe>
<iframe id="broken" src="r/broken.html" width="1200" height="900"></iframe>
<pre id="result"></pre>
<script>
function look(frame) {
  const d = document.getElementById(frame).contentDocument;
  const sections = SECTIONS.map(id => {
    const e = d.getElementById(id);
    return {id, shown: !!e && e.offsetHeight > 0};
  });
  const images = [...d.images].map(i => ({src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0}));
  const links = [...d.querySelectorAll("a[href]")].map(a => {
    const href = a.getAttribute("href");
    return {href, url: a.href, target: href.startsWith("#") ? !!d.getElementById(href.slice(1)) : null};
  });
  return {title: d.title, text: d.body.innerText, sections, images, links};
}
window.addEventListener("load", () => {
  const seen = {good: look("good"), broken: look("broken")};
  document.getElementById("result").textContent = JSON.stringify(seen);
});
</script></body></html>
"""

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")


def problems(seen: dict, console: list[tuple[str, str]], page: str) -> list[str]:
    """What is wrong with one framed page: console messages, sections not rendered, images not
    loaded, links to nothing."""
    found = [f"console: {message}" for message, source in console if source.endswith(page)]
    found += [f"section {s['id']} not rendered" for s in seen["sections"] if not s["shown"]]
    found += [f"image {i['src']} not loaded" for i in seen["images"] if not i["ok"]]
    for link in seen["links"]:
        if link["target"] is False:
            found.append(f"link {link['href']} has no target")
        url = urlparse(link["url"])
        if link["target"] is None and (url.scheme != "file" or not Path(unquote(url.path)).exists()):
            found.append(f"link {link['href']} does not resolve")
    return found


@pytest.fixture(scope="module")
def browsed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[tuple[str, str]]]:
    pytest.importorskip("matplotlib", reason="needs matplotlib (apt-get install python3-matplotlib)")
    top = tmp_path_factory.mktemp("browse")
    out = top / "r"
    given = docs.inputs()
    report.write(out, given)
    for name in ("reachability.pcap", "reachability.json", "attacks.json"):  # what verify would leave
        (out / "evidence").mkdir(exist_ok=True)
        (out / "evidence" / name).write_text("{}")
    faults = '<img src="plots/none.png"><a href="#nowhere">x</a>'
    faults += '<script>console.error("broken on purpose")</script>'
    broken = (out / "index.html").read_text().replace("</body>", faults + "</body>")
    (out / "broken.html").write_text(broken)
    ids = json.dumps([ident for ident, _ in sections.SECTIONS])
    (top / "probe.html").write_text(PROBE.replace("SECTIONS", ids, 1))
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--no-first-run",
         f"--user-data-dir={top / 'profile'}", "--dump-dom", (top / "probe.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    result = re.search(r'<pre id="result">(.*?)</pre>', proc.stdout, re.S)
    assert result and result.group(1), f"the probe page reported nothing: {proc.stderr[-2000:]}"
    seen = json.loads(result.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    return seen, CONSOLE.findall(proc.stderr)


def test_report_renders_without_errors_in_chromium(browsed: tuple[dict, list[tuple[str, str]]]) -> None:
    seen, console = browsed
    assert problems(seen["good"], console, "/r/index.html") == []
    assert len(seen["good"]["images"]) >= 3  # the drawing and the plots
    assert all(rid in seen["good"]["text"] for rid in docs.IDS)


def test_the_probe_sees_a_broken_page(browsed: tuple[dict, list[tuple[str, str]]]) -> None:
    seen, console = browsed
    assert problems(seen["broken"], console, "/r/broken.html") == [
        "console: broken on purpose",
        "image plots/none.png not loaded",
        "link #nowhere has no target",
    ]
