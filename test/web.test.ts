import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import sharp from 'sharp';
import { decodeRle, type CocoRle } from '../src/image/mask-encoding.js';
import { ROOT, tempDir } from './helpers.js';
import { GOLDEN, startServer, SYNTHETIC, type RunningServer } from './serve-helpers.js';

/** Debian's Chromium (installed by .ci/run when missing); the test says so when it is absent. */
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const OUT = join(ROOT, 'test-output', 'web');
const manifest = JSON.parse(readFileSync(join(GOLDEN, 'manifest.json'), 'utf8')) as {
  cases: Record<string, { chat: { query: string; text_output: string } }>;
};
const synthetic = manifest.cases.synthetic_png!.chat;

describe(
  'the web page in a real browser (Chromium headless via playwright-core)',
  { skip: CHROMIUM ? false : 'Chromium is not installed (apt-get install chromium)' },
  () => {
    const cache = tempDir('lisa-web-');
    let s: RunningServer;
    let browser: Browser;
    let page: Page;
    const shots: string[] = [];
    const shot = async (name: string, target: Page = page): Promise<Buffer> => {
      const file = join(OUT, `${name}.png`);
      const png = await target.screenshot({ path: file });
      shots.push(file);
      return png;
    };

    /** The image canvas at its natural size (an element screenshot may round its fractional box up a row). */
    const viewShot = async (name: string): Promise<Buffer> => {
      const bb = (await page.locator('#view').boundingBox())!;
      const file = join(OUT, `${name}.png`);
      const png = await page.screenshot({ path: file, clip: { x: Math.round(bb.x), y: Math.round(bb.y), width: 321, height: 241 } });
      shots.push(file);
      return png;
    };

    before(async () => {
      mkdirSync(OUT, { recursive: true });
      s = await startServer(cache.path);
      browser = await chromium.launch({ executablePath: CHROMIUM!, headless: true, args: ['--no-sandbox'] });
      page = await browser.newPage({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1, acceptDownloads: true });
      await page.goto(s.url);
    });
    after(async () => {
      await browser?.close();
      await s?.close();
      cache[Symbol.dispose]();
      if (shots.length) process.stdout.write(`# screenshots: ${shots.join(', ')}\n`);
    });

    it('loads with its examples and no outside requests', async () => {
      const outside: string[] = [];
      page.on('request', (r) => {
        if (!r.url().startsWith(s.url) && !r.url().startsWith('data:') && !r.url().startsWith('blob:')) outside.push(r.url());
      });
      await page.reload();
      await page.locator('#examples button').first().waitFor();
      assert.equal(await page.locator('#examples button').count(), 2);
      assert.match((await page.locator('#model').textContent())!, /checkpoint/);
      assert.deepEqual(outside, []);
      await shot('01-empty');
    });

    it('upload an image, ask, and the answer streams in (the official greedy text)', async () => {
      await page.setInputFiles('#file', SYNTHETIC);
      await page.locator('#status', { hasText: 'ready' }).waitFor();
      await page.fill('#question', synthetic.query);
      await page.click('#send');
      const answer = page.locator('.msg.assistant').last();
      // (Page-side expressions are strings: the tests compile without the DOM types.)
      await page.waitForFunction("!document.querySelector('.msg.assistant.streaming') && document.querySelector('#send:not([disabled])')");
      const text = (await answer.textContent())!;
      assert.ok(text.startsWith(synthetic.text_output.split('ASSISTANT: ').pop()!), text.slice(0, 120));
      await shot('02-answer');
    });

    it('a [SEG] answer: the mask is drawn over the image at 50 %, its phrase coloured; download PNG and COCO RLE', async () => {
      // Teacher forcing through the page's own request (the tiny test model's weights are random, so it never
      // chooses [SEG] itself): the real server computes the real mask for this answer, and the page draws it.
      await page.route('**/v1/chat/completions', async (route) => {
        const body = JSON.parse(route.request().postData()!) as Record<string, unknown>;
        await route.continue({ postData: JSON.stringify({ ...body, answer: 'The object is [SEG].' }) });
      });
      await page.fill('#question', 'Where is it? Please output segmentation mask.');
      await page.click('#send');
      await page.locator('#masks li').first().waitFor();
      await page.unroute('**/v1/chat/completions');
      const seg = page.locator('.msg.assistant .seg').last();
      assert.equal(await seg.textContent(), 'The object is [SEG]');
      assert.match((await seg.getAttribute('style'))!, /rgba\(255, ?0, ?0/);

      const [rleDownload] = await Promise.all([page.waitForEvent('download'), page.click('#download-rle')]);
      const coco = JSON.parse(readFileSync((await rleDownload.path())!, 'utf8')) as { segmentation: CocoRle; area: number }[];
      assert.equal(coco.length, 1);
      const mask = decodeRle(coco[0]!.segmentation);
      assert.deepEqual([mask.width, mask.height], [321, 241]);
      const [pngDownload] = await Promise.all([page.waitForEvent('download'), page.click('#masks li .download-png')]);
      const png = await sharp((await pngDownload.path())!)
        .extractChannel(0)
        .raw()
        .toBuffer();
      assert.deepEqual(
        new Uint8Array(png).map((v) => (v > 127 ? 1 : 0)),
        mask.data,
      );

      // The overlay's pixels: 0.5 × image + 0.5 × red where the mask is 1, the image elsewhere (mouse off the list:
      // hovering a mask highlights it).
      await page.mouse.move(0, 0);
      const view = await viewShot('03-mask-overlay');
      const got = await sharp(view).removeAlpha().raw().toBuffer({ resolveWithObject: true });
      assert.deepEqual([got.info.width, got.info.height], [321, 241]);
      const orig = await sharp(SYNTHETIC).removeAlpha().raw().toBuffer();
      let inside = 0,
        bad = 0;
      for (let p = 0; p < 321 * 241; p++) {
        const on = mask.data[p] === 1;
        inside += on ? 1 : 0;
        for (let k = 0; k < 3; k++) {
          const want = on ? Math.trunc(orig[p * 3 + k]! * 0.5 + [255, 0, 0][k]! * 0.5) : orig[p * 3 + k]!;
          if (Math.abs(got.data[p * 3 + k]! - want) > 2) bad++;
        }
      }
      assert.ok(inside > 0 && inside < 321 * 241, `mask covers ${inside} pixels`);
      assert.equal(bad, 0, `${bad} overlay channel values differ from the returned mask`);

      // Hovering its entry highlights it (75 %).
      await page.locator('#masks li').first().hover();
      const lit = await sharp(await viewShot('03a-mask-hover'))
        .removeAlpha()
        .raw()
        .toBuffer();
      const p0 = mask.data.indexOf(1);
      assert.ok(Math.abs(lit[p0 * 3]! - Math.trunc(orig[p0 * 3]! * 0.25 + 255 * 0.75)) <= 2, 'hovered mask drawn at 75 %');
      await page.mouse.move(0, 0);

      // Toggling the mask off shows the plain image.
      await page.locator('#masks li input[type=checkbox]').first().uncheck();
      const plain = await sharp(await viewShot('03b-mask-hidden'))
        .removeAlpha()
        .raw()
        .toBuffer();
      let diff = 0;
      for (let i = 0; i < plain.length; i++) diff = Math.max(diff, Math.abs(plain[i]! - orig[i]!));
      assert.ok(diff <= 2, `max difference ${diff} from the image with the mask hidden`);
      await page.locator('#masks li input[type=checkbox]').first().check();
    });

    it('a point prompt alone gives plain SAM a mask, added to the list', async () => {
      await page.click('button[data-mode=point]');
      const box = (await page.locator('#prompts').boundingBox())!;
      await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
      await page.fill('#question', '');
      await page.click('#send');
      await page.locator('#masks li').nth(1).waitFor();
      assert.match((await page.locator('#masks li').nth(1).textContent())!, /turn 3, mask 1/);
      await shot('04-point-prompt');
    });

    it('any Unicode text, and a phone-sized screen', async () => {
      await page.setViewportSize({ width: 390, height: 844 });
      await page.fill('#question', 'Что здесь? 这是什么？ 🚚 — ¿qué es?');
      await page.click('#send');
      await page.waitForFunction("document.querySelectorAll('.msg.user').length >= 4 && document.querySelector('#send:not([disabled])')");
      assert.equal(await page.locator('.msg.user').last().textContent(), 'Что здесь? 这是什么？ 🚚 — ¿qué es?');
      assert.equal(await page.locator('.msg.error').count(), 0);
      // Nothing wider than the screen.
      assert.ok((await page.evaluate<number>('document.documentElement.scrollWidth')) <= 390);
      await shot('05-phone');
      writeFileSync(join(OUT, 'README.txt'), 'Screenshots taken by test/web.test.ts (Chromium headless, playwright-core).\n');
    });
  },
);
