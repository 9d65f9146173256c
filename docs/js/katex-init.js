/* Typeset the maths left by pymdownx.arithmatex (generic mode) with the KaTeX served by this site.
   Inline maths is <span class="arithmatex">\( ... \)</span>, display maths <div class="arithmatex">\[ ... \]</div>. */
(function () {
  function typeset() {
    if (typeof katex === "undefined") return;  // KaTeX did not load: the TeX stays readable as text
    document.querySelectorAll(".arithmatex").forEach(function (element) {
      var display = element.tagName === "DIV";
      var tex = element.textContent.trim();
      tex = display ? tex.replace(/^\\\[/, "").replace(/\\\]$/, "") : tex.replace(/^\\\(/, "").replace(/\\\)$/, "");
      katex.render(tex, element, { displayMode: display, throwOnError: false });
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", typeset);
  } else {
    typeset();
  }
})();
