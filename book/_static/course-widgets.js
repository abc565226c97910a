/* Static ipywidgets for the course book, offline.
 *
 * myst-nb embeds each executed notebook's widget state (a <script type=
 * "application/vnd.jupyter.widget-state+json">) and one <script type=
 * "application/vnd.jupyter.widget-view+json"> per widget output. The usual renderer for them is
 * the @jupyter-widgets/html-manager bundle plus require.js from a CDN; this site must work without
 * a network, so this file draws the widgets the course shows (progress bars from tqdm, labels,
 * boxes, sliders, dropdowns, buttons) in the state they were left in, from the embedded state.
 * Controls are drawn disabled: the book is static (the interactive figures are plotly, and run
 * the lesson in JupyterLab to move the real widgets). Anything else reads "widget: run the
 * notebook to see it".
 */
(function () {
  "use strict";

  function loadState() {
    var models = {};
    document.querySelectorAll('script[type="application/vnd.jupyter.widget-state+json"]').forEach(function (el) {
      try {
        var state = JSON.parse(el.textContent).state || {};
        Object.keys(state).forEach(function (id) { models[id] = state[id]; });
      } catch (err) {
        console.warn("course-widgets: unreadable widget state", err);
      }
    });
    return models;
  }

  function make(tag, cls, text) {
    var el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function withDescription(state, control) {
    if (!state.description) return control;
    var wrap = make("span", "course-widget-row");
    wrap.appendChild(make("label", "course-widget-description", state.description));
    wrap.appendChild(control);
    return wrap;
  }

  function render(models, ref, depth) {
    var id = typeof ref === "string" ? ref.replace(/^IPY_MODEL_/, "") : "";
    var model = models[id];
    if (!model || depth > 20) return make("span", "course-widget-missing", "widget: run the notebook to see it");
    var name = model.model_name || "";
    var s = model.state || {};
    var el;
    if (/^(HBox|VBox|Box|GridBox|Accordion|Tab)Model$/.test(name)) {
      el = make("div", "course-widget-box " + (name === "HBoxModel" ? "course-widget-hbox" : "course-widget-vbox"));
      (s.children || []).forEach(function (child) { el.appendChild(render(models, child, depth + 1)); });
      return el;
    }
    if (name === "HTMLModel" || name === "HTMLMathModel") {
      el = make("span", "course-widget-html");
      el.innerHTML = s.value || "";  // the notebook's own output, as JupyterLab shows it
      return withDescription(s, el);
    }
    if (name === "LabelModel") return make("span", "course-widget-label", s.value || "");
    if (/ProgressModel$/.test(name)) {
      el = make("progress", "course-widget-progress" + (s.bar_style ? " " + s.bar_style : ""));
      el.max = s.max === undefined ? 100 : s.max;
      el.value = Math.max(0, (s.value || 0) - (s.min || 0));
      el.max = el.max - (s.min || 0);
      return withDescription(s, el);
    }
    if (/SliderModel$/.test(name)) {
      el = make("span", "course-widget-row");
      var range = make("input", "course-widget-slider");
      range.type = "range";
      range.disabled = true;
      if (Array.isArray(s._options_labels)) {
        range.min = 0; range.max = s._options_labels.length - 1; range.value = s.index || 0;
      } else {
        range.min = s.min; range.max = s.max; range.step = s.step; range.value = s.value;
      }
      el.appendChild(range);
      var shown = Array.isArray(s._options_labels) ? s._options_labels[s.index || 0] : s.value;
      el.appendChild(make("span", "course-widget-readout", String(shown)));
      return withDescription(s, el);
    }
    if (/^(Dropdown|Select|RadioButtons|ToggleButtons)Model$/.test(name)) {
      el = make("select", "course-widget-select");
      el.disabled = true;
      (s._options_labels || []).forEach(function (label, i) {
        var opt = make("option", "", label);
        opt.selected = i === s.index;
        el.appendChild(opt);
      });
      return withDescription(s, el);
    }
    if (name === "ButtonModel" || name === "ToggleButtonModel") {
      el = make("button", "course-widget-button", s.description || "");
      el.disabled = true;
      return el;
    }
    if (/^(Checkbox|Valid)Model$/.test(name)) {
      return withDescription(s, make("span", "course-widget-label", s.value ? "✔" : "✘"));
    }
    if (/^(Text|Textarea|IntText|FloatText|BoundedIntText|BoundedFloatText)Model$/.test(name)) {
      el = make("input", "course-widget-text");
      el.value = s.value === undefined ? "" : String(s.value);
      el.disabled = true;
      return withDescription(s, el);
    }
    return make("span", "course-widget-missing", "widget (" + name.replace(/Model$/, "") + "): run the notebook to see it");
  }

  function renderAll() {
    var views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
    if (!views.length) return;
    var models = loadState();
    views.forEach(function (el) {
      if (el.dataset.courseRendered) return;
      el.dataset.courseRendered = "1";
      var view;
      try { view = JSON.parse(el.textContent); } catch (err) { return; }
      var out = make("div", "course-widget");
      out.appendChild(render(models, view.model_id, 0));
      el.parentNode.insertBefore(out, el.nextSibling);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", renderAll);
  } else {
    renderAll();
  }
})();
