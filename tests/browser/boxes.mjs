// An independent reader of fragmented MP4 for the tests: GPAC's MP4Box.js (npm `mp4box`)
// parses the files given (an init segment, then fragments, read as one file) and this prints
// what it found as JSON: top-level boxes, brands, tracks, trex, each fragment's boxes, and
// every sample's timing, flags and place.
import { createFile } from 'mp4box';
import { readFileSync } from 'node:fs';

const file = createFile();
let offset = 0;
for (const path of process.argv.slice(2)) {
  const bytes = readFileSync(path);
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  buffer.fileStart = offset;
  offset += bytes.byteLength;
  file.appendBuffer(buffer);
}
file.flush();

const info = file.getInfo();
const out = {
  boxes: file.boxes.map((b) => ({ type: b.type, start: b.start, size: b.size })),
  major_brand: file.ftyp?.major_brand ?? null,
  compatible_brands: file.ftyp?.compatible_brands ?? [],
  tracks: info.tracks.map((t) => ({
    id: t.id,
    codec: t.codec,
    timescale: t.timescale,
    width: t.video?.width ?? null,
    height: t.video?.height ?? null,
    sample_rate: t.audio?.sample_rate ?? null,
    channels: t.audio?.channel_count ?? null,
  })),
  trex: (file.moov?.mvex?.trexs ?? []).map((t) => t.track_id),
  fragments: file.boxes
    .filter((b) => b.type === 'moof')
    .map((moof) => ({
      sequence: moof.mfhd.sequence_number,
      trafs: moof.trafs.map((traf) => ({
        track: traf.tfhd.track_id,
        base_decode_time: Number(traf.tfdt.baseMediaDecodeTime),
        samples: traf.truns.reduce((n, run) => n + run.sample_count, 0),
      })),
    })),
  samples: Object.fromEntries(
    info.tracks.map((t) => [
      t.id,
      file.getTrackSamplesInfo(t.id).map((s) => ({
        dts: Number(s.dts),
        cts: Number(s.cts),
        duration: s.duration,
        sync: Boolean(s.is_sync),
        size: s.size,
        offset: s.offset,
      })),
    ]),
  ),
};
console.log(JSON.stringify(out));
