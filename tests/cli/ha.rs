//! Steward itself highly available on an etcd lease (being written).
