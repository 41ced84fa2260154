//! Helpers shared by the sessionize integration tests.

/// `batch`'s schema over other columns, each field typed as its new column is.
pub fn with_columns(
    batch: &arrow::array::RecordBatch,
    columns: Vec<arrow::array::ArrayRef>,
) -> arrow::array::RecordBatch {
    let fields: Vec<arrow::datatypes::Field> = batch
        .schema()
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
        .collect();
    arrow::array::RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        columns,
    )
    .unwrap()
}
