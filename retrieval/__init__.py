"""Embedding and search: from image files to token features, and from queries to ranked images.

The stage every other one starts from or ends in (embed -> mine -> agent -> triplets -> train -> evaluate / search):

- [`image_files`]: which files are images, the image files of a folder (optionally a seeded sample);
- [`content_hashes`]: file SHA-256, memoised by `stat()` signature (image identity for caches);
- [`encoding`]: images -> `(N, Q, D)` token features, (image, text) -> query vectors of a ranking method, and the
  gallery ranking of a set of queries;
- [`image_features`] / [`feature_shards`]: a folder's features, embedded once, in resumable safetensors shards;
- [`similarity`]: the exact blocked token-level top-k (mining, evaluation and search all use it);
- [`approximate_search`]: faiss candidates re-ranked exactly (for millions of images);
- [`gallery_index`]: image features with their ids, searched with composed queries, saved and loaded; built from a
  folder or a list of images with `GalleryIndex.from_images`.
"""

from __future__ import annotations

from .approximate_search import ApproximateTokenIndex, approximate_topk_token_similarity
from .content_hashes import ContentHashes, file_sha256
from .encoding import QUERY_MODES, Ranking, encode_images, encode_queries, rank_gallery
from .gallery_index import GalleryIndex
from .image_features import ImageFeatures, extract_image_features, load_image_features
from .image_files import IMAGE_EXTENSIONS, list_images
from .similarity import REDUCTIONS, topk_token_similarity

__all__ = [
    "IMAGE_EXTENSIONS",
    "QUERY_MODES",
    "REDUCTIONS",
    "ApproximateTokenIndex",
    "ContentHashes",
    "GalleryIndex",
    "ImageFeatures",
    "Ranking",
    "approximate_topk_token_similarity",
    "encode_images",
    "encode_queries",
    "extract_image_features",
    "file_sha256",
    "list_images",
    "load_image_features",
    "rank_gallery",
    "topk_token_similarity",
]
