"""The web page served at `GET /`: upload an image, see the top classes and the Grad-CAM overlay (classifiers;
other handlers get `no_page`, which lists their routes).

One self-contained HTML document (inline CSS and JavaScript, nothing fetched from other hosts), kept as a
Python string so it ships inside the package without package-data configuration. It asks /healthz what
the run is (task, classes, limits), posts the chosen file to /predict?explain=true with fetch(), and
draws the answer with textContent (class names are never parsed as HTML). Error answers (413, 415, 422,
503, 504) are shown with their message. `data-state` on <body> ("ready", "busy", "done", "error") lets
tests and scripts wait for the result.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cnnkit</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  #about { color: #666; margin-top: 0; }
  #drop { border: 2px dashed #999; border-radius: .5rem; padding: 1.5rem; text-align: center; }
  #drop.over { border-color: #2a6ad8; background: #eef4ff; }
  #status { min-height: 1.5rem; margin: 1rem 0; }
  #status.error { color: #b00020; font-weight: 600; }
  #result { display: flex; gap: 2rem; flex-wrap: wrap; align-items: flex-start; }
  figure { margin: 0; text-align: center; }
  figure img { width: 224px; height: 224px; object-fit: contain; image-rendering: pixelated; background: #000; }
  figcaption { color: #666; font-size: .9rem; }
  ol { padding-left: 1.2rem; min-width: 16rem; }
  li { margin: .3rem 0; }
  .bar { height: .5rem; background: #2a6ad8; border-radius: .25rem; }
  [hidden] { display: none !important; }
</style>
</head>
<body data-state="loading">
<h1>cnnkit <span id="run"></span></h1>
<p id="about">loading the model description&hellip;</p>
<div id="drop">
  <label for="file">Choose an image, or drop one here:</label>
  <input type="file" id="file" name="file" accept="image/*">
</div>
<p id="status" role="status" aria-live="polite"></p>
<div id="result" hidden>
  <figure><img id="preview" alt="uploaded image"><figcaption>uploaded</figcaption></figure>
  <figure id="overlay-figure" hidden><img id="overlay" alt="Grad-CAM overlay">
    <figcaption id="overlay-caption">Grad-CAM</figcaption></figure>
  <ol id="predictions"></ol>
</div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let limits = null;

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").className = state === "error" ? "error" : "";
  document.body.dataset.state = state;
}

async function describe() {
  try {
    const info = await (await fetch("healthz")).json();
    limits = info.limits;
    $("run").textContent = "\\u2014 " + info.model.run;
    $("about").textContent = `${info.model.task}, ${info.model.classes.length} classes, input ` +
      `${info.model.input.image_size.join("x")}x${info.model.input.channels}, backend ${info.model.backend}; ` +
      `images up to ${(limits.max_body_bytes / 1048576).toFixed(0)} MiB.`;
    setStatus("", "ready");
  } catch (error) {
    setStatus("cannot reach the server: " + error, "error");
  }
}

function render(result) {
  const list = $("predictions");
  list.replaceChildren();
  for (const prediction of result.predictions) {
    const item = document.createElement("li");
    item.dataset.class = prediction.class;
    item.dataset.probability = prediction.probability;
    const label = document.createElement("div");
    label.textContent = `${prediction.class} \\u2014 ${(100 * prediction.probability).toFixed(1)}%`;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${Math.max(1, 100 * prediction.probability)}%`;
    item.append(label, bar);
    list.append(item);
  }
  const cam = result.gradcam;
  $("overlay-figure").hidden = !cam;
  if (cam) {
    $("overlay").src = cam.overlay;
    $("overlay-caption").textContent = `Grad-CAM of ${cam.class} (layer ${cam.layer})`;
  }
  $("result").hidden = false;
}

async function classify(file) {
  if (!file) return;
  if (limits && file.size > limits.max_body_bytes) {
    setStatus(`${file.name} is ${(file.size / 1048576).toFixed(1)} MiB; the limit is ` +
              `${(limits.max_body_bytes / 1048576).toFixed(0)} MiB`, "error");
    return;
  }
  $("preview").src = URL.createObjectURL(file);
  setStatus(`classifying ${file.name}\\u2026`, "busy");
  const body = new FormData();
  body.append("file", file);
  try {
    const response = await fetch("predict?explain=true&top_k=5", { method: "POST", body });
    const answer = await response.json();
    if (!response.ok) {
      $("result").hidden = true;
      setStatus(`${response.status}: ${answer.detail}`, "error");
      return;
    }
    render(answer);
    setStatus(`${file.name}: ${answer.predictions[0].class} ` +
              `(${(100 * answer.predictions[0].probability).toFixed(1)}%) in ${answer.timing_ms.total.toFixed(0)} ms`,
              "done");
  } catch (error) {
    setStatus("request failed: " + error, "error");
  }
}

$("file").addEventListener("change", (event) => classify(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  classify(event.dataTransfer.files[0]);
});
describe();
</script>
</body>
</html>
"""


def no_page(info: dict, endpoints: tuple[str, ...]) -> str:
    """What `GET /` shows for a handler the page above does not fit (an embedder): the routes to call instead."""
    from html import escape

    routes = "".join(f"<li><code>POST /{escape(name)}</code></li>" for name in endpoints)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>cnnkit</title></head><body>\n'
            f"<h1>cnnkit &mdash; {escape(str(info.get('run', 'model')))}</h1>\n"
            f"<p>This {escape(str(info.get('task', '')))} run has no upload page (the page shows a classifier's "
            f"classes); send images to its routes as multipart/form-data (<code>/healthz</code> describes the "
            f"model).</p>\n<ul>{routes}<li><code>GET /healthz</code></li></ul>\n</body></html>\n")
